"""The classical methods through the method interface: registry, recipes, fit, errors."""

from __future__ import annotations

import numpy as np
import pytest

from imsim.classical import histograms, keypoints, preprocess
from imsim.classical.ssim import ssim
from imsim.data.types import Split
from imsim.errors import UserError
from imsim.methods import create_method, embed_all, list_methods
from imsim.methods.classical import ClassicalEmbedder


def _images(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent color blobs with noise: 3 classes, ``n`` images each."""
    rng = np.random.default_rng(seed)
    colors = np.array([[220, 30, 30], [30, 200, 40], [40, 40, 220]])
    labels = np.repeat(np.arange(3), n)
    yy, xx = np.mgrid[:size, :size]
    imgs = np.empty((len(labels), size, size, 3), np.uint8)
    for i, c in enumerate(labels):
        cy, cx = rng.uniform(4, size - 4, 2)
        r = rng.uniform(3, 6)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None]
        img = np.where(mask, colors[c], 90) + rng.normal(0, 12, (size, size, 3))
        imgs[i] = np.clip(img, 0, 255).astype(np.uint8)
    return imgs, labels


def test_registered():
    names = set(list_methods())
    assert {"classical", "ssim", "hist", "keypoints"} <= names


def test_embed_keeps_the_images():
    imgs, _ = _images(2)
    m = create_method("ssim")
    feats = embed_all(m, imgs)
    assert feats.shape == (6, 2 + 16 * 16 * 3)
    assert feats.dtype == np.float32
    np.testing.assert_array_equal(feats[:, 2:].reshape(imgs.shape), imgs)


def test_single_components_equal_their_kernels():
    imgs, _ = _images(2)
    q, s = np.array([0, 4]), np.array([1, 2, 5])
    sc = create_method("ssim").scorer(create_method("ssim").embed(imgs), [])
    out = sc.pair_sim(q, s)
    for i, qi in enumerate(q):
        for j, sj in enumerate(s):
            assert out[i, j] == pytest.approx(ssim(imgs[qi], imgs[sj]), abs=1e-6)  # per channel
    hm = create_method("hist")
    h = histograms.hsv_histograms(imgs, (8, 3, 3))
    expected = -histograms.compare(h, h, "bhattacharyya", q, s)  # scale-free comparison
    np.testing.assert_allclose(hm.scorer(hm.embed(imgs), []).pair_sim(q, s), expected)


def test_seed_recipe_is_the_study_formula():
    imgs, _ = _images(2, size=8)
    m = create_method("classical", recipe="seed")
    assert m.spec.support_aggregation == "images" and not m.spec.fits_on_seen
    sc = m.scorer(m.embed(imgs), [])
    q, s = np.array([0, 3]), np.arange(6)
    parts = sc.component_sims(q, s)
    fused = sc.pair_sim(q, s)
    np.testing.assert_allclose(fused, (parts["hist"] + parts["ssim"] + parts["keypoints"]) / 3)
    # Its parts, recomputed directly: upsampled to 224, RGB correlation, BGR-order gray SSIM,
    # SIFT mean L1 distance.
    up = preprocess.seed_upsample(imgs, 224)
    h = histograms.rgb_histograms(up)
    np.testing.assert_allclose(parts["hist"], histograms.compare(h, h, "correl", q, s))
    g = preprocess.to_gray(up, "bgr")
    assert parts["ssim"][1, 2] == pytest.approx(ssim(g[3], g[2]), abs=1e-6)
    d = keypoints.sift_descriptors(preprocess.to_gray(up, "rgb"))
    np.testing.assert_allclose(-parts["keypoints"], keypoints.crosscheck_l1_mean(d, q, s))


def test_default_classical_fits_on_seen_and_ranks_classes():
    imgs, labels = _images(20)
    m = create_method("classical")
    assert m.spec.fits_on_seen and m.spec.support_aggregation == "mean"
    with pytest.raises(UserError, match="fit"):
        m.scorer(m.embed(imgs), [])
    m.fit(Split(imgs, labels), ["a", "b", "c"])
    assert m.fusion is not None
    assert sum(m.fusion.weights) == pytest.approx(1.0)
    assert m.describe()["fusion"]["seen_top1"] > 0.5  # 3-way, chance 1/3
    test_imgs, test_labels = _images(6, seed=1)
    sc = m.scorer(m.embed(test_imgs), [])
    s_idx = np.concatenate([np.flatnonzero(test_labels == c)[:3] for c in range(3)])
    q_idx = np.setdiff1d(np.arange(len(test_labels)), s_idx)
    sims = sc.class_sim(q_idx, s_idx, test_labels[s_idx], np.arange(3))
    assert sims.shape == (len(q_idx), 3)
    assert np.mean(sims.argmax(1) == test_labels[q_idx]) > 0.5


def test_fit_needs_enough_seen_images():
    imgs, labels = _images(5)
    with pytest.raises(UserError, match="20 training images"):
        create_method("classical").fit(Split(imgs, labels), ["a", "b", "c"])


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="too small"):
        create_method("ssim").embed(np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(UserError, match="recipe"):
        ClassicalEmbedder("ssim", ("ssim",), recipe="fancy")
    m = create_method("hist")
    a = m.embed(np.zeros((1, 8, 8, 3), np.uint8))
    b = m.embed(np.zeros((1, 9, 9, 3), np.uint8))
    with pytest.raises(UserError, match="sizes"):
        m.scorer(np.concatenate([a, b[:, : a.shape[1]]]), [])
    with pytest.raises(UserError, match="features"):
        m.scorer(np.zeros((2, 1), np.float32), [])


@pytest.mark.parametrize(
    ("scores", "chosen"),
    [
        ({0.7: 0.9, 0.8: 0.5, 0.9: 0.6}, 0.7),  # the best seen-class top-1 wins
        ({0.7: 0.5, 0.8: 0.6, 0.9: 0.8}, 0.9),
        ({0.7: 0.6, 0.8: 0.6, 0.9: 0.6}, 0.8),  # a tie keeps the recipe's own ratio
    ],
)
def test_fit_chooses_the_sift_ratio_on_seen_classes(monkeypatch, scores, chosen):
    import imsim.methods.classical as classical

    real, calls = classical.fit_fusion, []

    def fake(sims, labels, seed=0):  # the real fit, with the seen top-1 the test decides
        calls.append(sims["keypoints"].copy())
        fusion, table = real(sims, labels, seed=seed, n_episodes=5)
        ratio = classical.RATIO_CANDIDATES[len(calls) - 1]
        return fusion, [{**row, "seen_top1": scores[ratio]} for row in table]

    monkeypatch.setattr(classical, "fit_fusion", fake)
    imgs, labels = _images(20)
    m = create_method("classical")
    m.fit(Split(imgs, labels), ["a", "b", "c"])
    assert m.recipe.ratio == chosen and m.describe()["recipe"]["ratio"] == chosen
    assert m.scorer(m.embed(imgs), []).recipe.ratio == chosen  # unseen classes use it
    desc = m.describe()["fusion"]
    assert [(r["ratio"], r["seen_top1"]) for r in desc["ratio_search"]] == sorted(scores.items())
    assert desc["seen_top1"] == scores[chosen]  # the fit table kept is the chosen ratio's
    # each candidate was scored with its own ratio
    sc = ClassicalEmbedder("keypoints", ("keypoints",)).scorer(m.embed(imgs), [])
    pool = np.arange(len(imgs))
    for ratio, got in zip(classical.RATIO_CANDIDATES, calls, strict=True):
        want = keypoints.ratio_match_score(sc.desc, pool, pool, ratio)
        np.testing.assert_array_equal(got, want)


def test_the_seed_recipe_fits_nothing(monkeypatch):
    import imsim.methods.classical as classical

    monkeypatch.setattr(classical, "fit_fusion", lambda *a, **k: pytest.fail("fit_fusion"))
    imgs, labels = _images(20)
    m = create_method("classical", recipe="seed")
    m.fit(Split(imgs, labels), ["a", "b", "c"])
    assert m.recipe == classical.SEED and m.recipe.ratio == 1.0
    assert m.fusion is None and m.ratio_search == [] and "fusion" not in m.describe()


def test_a_refit_breaks_ties_toward_the_unfitted_ratio(monkeypatch):
    import imsim.methods.classical as classical

    real, calls = classical.fit_fusion, []
    first = {0.7: 0.9, 0.8: 0.5, 0.9: 0.6}

    def fake(sims, labels, seed=0):  # the first fit prefers 0.7, the second is a tie
        calls.append(None)
        fusion, table = real(sims, labels, seed=seed, n_episodes=5)
        ratio = classical.RATIO_CANDIDATES[(len(calls) - 1) % 3]
        top1 = first[ratio] if len(calls) <= 3 else 0.6
        return fusion, [{**row, "seen_top1": top1} for row in table]

    monkeypatch.setattr(classical, "fit_fusion", fake)
    imgs, labels = _images(20)
    m = create_method("classical")
    m.fit(Split(imgs, labels), ["a", "b", "c"])
    assert m.recipe.ratio == 0.7
    m.fit(Split(imgs, labels), ["a", "b", "c"])
    assert m.recipe.ratio == 0.8 and len(calls) == 6


def test_keypoints_alone_fits_nothing(monkeypatch):
    import imsim.methods.classical as classical

    monkeypatch.setattr(classical, "fit_fusion", lambda *a, **k: pytest.fail("fit_fusion"))
    imgs, labels = _images(20)
    m = create_method("keypoints")
    before = m.recipe
    m.fit(Split(imgs, labels), ["a", "b", "c"])
    assert m.recipe == before and m.recipe.ratio == 0.8
    assert m.fusion is None and m.ratio_search == [] and "fusion" not in m.describe()
