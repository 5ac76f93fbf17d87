"""``clip`` and ``clip-text`` through the registry, on the tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from imsim.clip import weights
from imsim.data.types import Split
from imsim.errors import UserError
from imsim.methods import create_method, parse_methods
from imsim.methods.base import l2_normalize
from imsim.methods.clip import (
    CIFAR_TEMPLATES,
    TEXT_WEIGHTS,
    ClipEmbedder,
    ClipTextEmbedder,
    clean_name,
)
from tests.clip_tiny import TINY_NAME, make_tiny_clip

NAMES = ["oak_tree", "red_fox", "sea_turtle", "willow_tree", "old_wolf", "tulip"]
SEEN, UNSEEN = (0, 1, 2), (3, 4, 5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def make(name: str, tiny: dict[str, str], **options: object):
    return create_method(name, clip_model=TINY_NAME, pretrained=tiny["file"], **options)


class Spy:
    """Records every text the embedder encodes."""

    def __init__(self, method: ClipEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        inner = method.embed_text

        def spy(texts: list[str]) -> np.ndarray:
            self.texts += list(texts)
            return inner(texts)

        monkeypatch.setattr(method, "embed_text", spy)


def pool(n_per_class: int = 8, classes: tuple[int, ...] = UNSEEN, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.asarray(classes), n_per_class)
    # Class-dependent colors plus noise, so classes are separable in any embedding.
    base = (np.asarray(labels)[:, None] * np.array([40, 90, 150]) % 256).astype(np.int64)
    images = base[:, None, None, :] + rng.integers(-30, 30, (len(labels), 32, 32, 3))
    return Split(np.clip(images, 0, 255).astype(np.uint8), labels)


def test_clip_embedder(tiny: dict[str, str]) -> None:
    method = make("clip", tiny)
    assert isinstance(method, ClipEmbedder) and method.spec.name == "clip"
    assert method.spec.support_aggregation == "prototype" and not method.spec.fits_on_seen
    x = pool().images[:4]
    feats = method.embed(x)
    assert feats.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():
        np.testing.assert_allclose(method.as_module()(torch.from_numpy(x)).numpy(), feats)
    assert method.embed_text(["a red fox"]).shape == (1, 32)
    assert method.describe()["weights_source"] == "file"


def test_random_weights_are_marked_in_names(tiny: dict[str, str]) -> None:
    for name in ("clip", "clip-text"):
        method = create_method(name, clip_model=TINY_NAME, pretrained="none")
        assert method.spec.name == f"{name}[random-weights]"
        assert method.describe()["random_weights"] is True


def test_no_arg_and_bad_recipe(tiny: dict[str, str]) -> None:
    with pytest.raises(UserError, match="takes no :ARG"):
        make("clip:/some/file.pt", tiny)
    with pytest.raises(UserError, match="unknown recipe"):
        ClipTextEmbedder(make("clip", tiny).clip, recipe="fancy")


def test_clip_text_uses_the_ranked_unseen_names_only(
    tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    method = make("clip-text", tiny, recipe="default")
    method.text_weight = 0.3  # as if fitted
    spy = Spy(method, monkeypatch)
    p = pool()
    feats = method.embed(p.images)
    scorer = method.scorer(feats, NAMES)
    s_idx = np.flatnonzero(np.isin(np.arange(len(p)) % 8, [0, 1]))
    q_idx = np.setdiff1d(np.arange(len(p)), s_idx)
    classes = np.asarray(UNSEEN)
    sims = scorer.class_sim(q_idx, s_idx, p.labels[s_idx], classes)

    unseen = [NAMES[c] for c in UNSEEN]
    expected = [t.format(clean_name(n)) for n in unseen for t in CIFAR_TEMPLATES]
    assert sorted(spy.texts) == sorted(expected)  # every unseen name, and nothing else
    assert "a photo of a willow tree." in spy.texts
    assert not any(clean_name(NAMES[c]) in t for c in SEEN for t in spy.texts)

    # The fused score, recomputed by hand from the prototype and the unseen-name texts.
    protos = np.stack([feats[s_idx][p.labels[s_idx] == c].mean(0) for c in classes])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    text = np.stack(
        [
            method.embed_text([t.format(clean_name(n)) for t in CIFAR_TEMPLATES]).mean(0)
            for n in unseen
        ]
    )
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    want = 0.7 * feats[q_idx] @ protos.T + 0.3 * feats[q_idx] @ text.T
    np.testing.assert_allclose(sims, want, atol=1e-5)

    # Renaming a seen class changes nothing; renaming an unseen one changes its column.
    renamed_seen = [*NAMES[:3], *NAMES[3:]]
    renamed_seen[0] = "pine_tree"
    same = method.scorer(feats, renamed_seen).class_sim(q_idx, s_idx, p.labels[s_idx], classes)
    np.testing.assert_array_equal(same, sims)
    renamed = list(NAMES)
    renamed[4] = "lighthouse"
    diff = method.scorer(feats, renamed).class_sim(q_idx, s_idx, p.labels[s_idx], classes)
    np.testing.assert_array_equal(diff[:, [0, 2]], sims[:, [0, 2]])
    assert not np.allclose(diff[:, 1], sims[:, 1])


def test_seed_recipe_is_the_studys_rule(
    tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    method = make("clip-text", tiny, recipe="seed")
    assert not method.spec.fits_on_seen and method.text_weight == 0.5
    spy = Spy(method, monkeypatch)
    p = pool()
    raw = method.embed(p.images)  # the study's recipe: raw features, normalized by the scorer
    feats = l2_normalize(raw)
    s_idx, q_idx = np.arange(0, len(p), 8), np.setdiff1d(np.arange(len(p)), np.arange(0, len(p), 8))
    sims = method.scorer(raw, NAMES).class_sim(q_idx, s_idx, p.labels[s_idx], np.asarray(UNSEEN))
    assert sorted(spy.texts) == sorted(NAMES[c] for c in UNSEEN)  # bare names: "willow_tree"
    text = method.embed_text([NAMES[c] for c in UNSEEN])
    image = feats[q_idx] @ feats[s_idx].T  # one support image per class: it is the prototype
    # The study: distance = mean of (1 - cos) to prototype and to text, i.e. mean similarity.
    np.testing.assert_allclose(sims, 0.5 * image + 0.5 * feats[q_idx] @ text.T, atol=1e-5)


def test_fit_chooses_the_weight_on_seen_classes_only(
    tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    method = make("clip-text", tiny)
    assert method.spec.fits_on_seen
    with pytest.raises(RuntimeError, match="call fit first"):
        method.scorer(np.zeros((2, 32), np.float32), NAMES)
    method.fit_episodes = 20
    spy = Spy(method, monkeypatch)
    method.fit(pool(n_per_class=12, classes=SEEN), NAMES)
    assert method.text_weight in TEXT_WEIGHTS
    used = {n for n in NAMES if any(clean_name(n) in t for t in spy.texts)}
    assert used == {NAMES[c] for c in SEEN}
    report = method.describe()["text_weight_fit"]
    assert report["n_classes"] == 3 and report["queries"] == 7 and report["shots"] == 5
    assert len(report["seen_top1"]) == len(TEXT_WEIGHTS)
    assert max(report["seen_top1"]) == report["seen_top1"][TEXT_WEIGHTS.index(method.text_weight)]


def test_all_skips_clip_without_weights_but_naming_it_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights, "hub_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setenv("HOME", str(tmp_path))
    opts = {"clip_model": "ViT-B-32", "pretrained": "openai", "recipe": "default"}
    names = parse_methods("all", **opts)
    assert "clip" not in names and "clip-text" not in names and "pixels" in names
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: --methods all skips clip, clip-text: ")
    assert parse_methods("clip", **opts) == ["clip"]
    with pytest.raises(UserError, match=r"CLIP weights for ViT-B-32 \(openai\)"):
        create_method("clip", **opts)
    # With random weights nothing is missing: all includes them.
    assert {"clip", "clip-text"} <= set(parse_methods("all", **{**opts, "pretrained": "none"}))


def test_seed_recipe_averages_raw_image_features_like_the_study(tiny: dict[str, str]) -> None:
    seed, default = make("clip", tiny, recipe="seed"), make("clip", tiny)
    p = pool()
    raw = seed.embed(p.images)
    unit = default.embed(p.images)
    np.testing.assert_allclose(l2_normalize(raw), unit, atol=1e-5)  # same network, not normalized
    norms = np.linalg.norm(raw, axis=1)
    assert norms.std() > 1e-3 * norms.mean()  # the norms differ, so the two rules can differ
    s_idx = np.flatnonzero(np.isin(np.arange(len(p)) % 8, (0, 1, 2)))
    q_idx = np.setdiff1d(np.arange(len(p)), s_idx)
    classes = np.asarray(UNSEEN)
    got = seed.scorer(raw, NAMES).class_sim(q_idx, s_idx, p.labels[s_idx], classes)
    # The study: prototype = normalized mean of raw features; cosine with the unit query.
    protos = np.stack([raw[s_idx][p.labels[s_idx] == c].mean(0) for c in classes])
    np.testing.assert_allclose(got, unit[q_idx] @ l2_normalize(protos).T, atol=1e-5)
    # The default rule averages unit vectors: a different prototype.
    ref = default.scorer(unit, NAMES).class_sim(q_idx, s_idx, p.labels[s_idx], classes)
    unit_protos = np.stack([unit[s_idx][p.labels[s_idx] == c].mean(0) for c in classes])
    np.testing.assert_allclose(ref, unit[q_idx] @ l2_normalize(unit_protos).T, atol=1e-5)
    assert np.abs(got - ref).max() > 1e-6
    # Image-to-image similarity (retrieval) is the cosine under both recipes.
    np.testing.assert_allclose(
        seed.scorer(raw, NAMES).pair_sim(q_idx, s_idx), unit[q_idx] @ unit[s_idx].T, atol=1e-5
    )
    with pytest.raises(UserError, match="unknown recipe 'fancy' for clip"):
        make("clip", tiny, recipe="fancy")
