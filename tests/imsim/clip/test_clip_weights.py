"""Resolving --clip-model / --pretrained: cache, files, offline errors; no network is used."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from imsim.clip import weights
from imsim.clip.weights import WeightsUnavailable, resolve, unavailable
from imsim.errors import UserError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and an unreachable hub."""
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(weights, "hub_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setenv("HOME", str(tmp_path))  # open_clip's URL cache is ~/.cache/clip
    return cache


def test_offline_without_weights_is_one_clear_error(offline: Path) -> None:
    from imsim.clip import load_clip

    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as err:
        load_clip("ViT-B-32", "openai")
    assert time.perf_counter() - t0 < 5  # no download retries
    msg = str(err.value)
    assert "\n" not in msg
    assert "ViT-B-32 (openai)" in msg
    # What to do: the file to fetch, and how to pass it (openai weights need QuickGELU).
    assert "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/" in msg
    assert "--clip-model ViT-B-32-quickgelu --pretrained PATH" in msg
    assert unavailable(clip_model="ViT-B-32", pretrained="openai") == msg


def test_cached_tag_resolves_without_network(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = offline / "models--timm--vit_base_patch32_clip_224.openai"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    target = snap / "snapshots" / "abc123" / "open_clip_pytorch_model.bin"
    target.write_bytes(b"weights")

    def no_network(url: str, timeout: float = 3.0) -> bool:
        raise AssertionError("a cached tag must not touch the network")

    monkeypatch.setattr(weights, "hub_reachable", no_network)
    w = resolve("ViT-B-32", "openai")
    assert w.source == "tag" and w.path == str(target)
    assert w.quick_gelu is True  # the openai weights were trained with QuickGELU
    assert tuple(w.preprocess["mean"]) == OPENAI_MEAN
    assert unavailable(clip_model="ViT-B-32", pretrained="openai") is None


def test_reachable_hub_counts_as_available(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "hub_reachable", lambda url, timeout=3.0: True)
    w = resolve("ViT-B-32", "laion2b_s34b_b79k", download=False)
    assert w.path is None and w.quick_gelu is False
    assert unavailable(clip_model="ViT-B-32", pretrained="laion2b_s34b_b79k") is None


def test_random_weights_need_nothing(offline: Path) -> None:
    w = resolve("ViT-B-32", "none")
    assert w.random and w.path is None and "never an accuracy figure" in w.note
    assert unavailable(clip_model="ViT-B-32", pretrained="none") is None


def test_bad_values_are_errors_not_skips(offline: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="neither a file nor an open_clip tag of ViT-B-32"):
        unavailable(clip_model="ViT-B-32", pretrained="no-such-tag")
    with pytest.raises(UserError, match="unknown open_clip model 'ViT-Nope'"):
        resolve("ViT-Nope", "none")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text("{}")
    with pytest.raises(UserError, match="no weights file"):
        resolve(f"local-dir:{empty}", "openai")
    with pytest.raises(UserError, match=r"no open_clip_config\.json"):
        resolve(f"local-dir:{tmp_path / 'missing'}", "openai")


def test_file_of_a_tagged_model_takes_the_tags_preprocessing(tmp_path: Path) -> None:
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"x")
    w = resolve("ViT-B-16-SigLIP", str(f))  # every SigLIP tag: squash resize, mean/std 0.5
    assert w.source == "file" and w.path == str(f)
    assert w.preprocess["resize_mode"] == "squash"
    assert tuple(w.preprocess["mean"]) == (0.5, 0.5, 0.5)
