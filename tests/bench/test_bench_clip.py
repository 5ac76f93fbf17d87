"""``bench.accuracy --methods clip,clip-text`` end to end on a small image folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import accuracy
from tests.clip_tiny import TINY_NAME, make_tiny_clip

CLASSES = ["apple_tree", "maple_tree", "sea_lion", "willow_tree"]  # sorted: 2 seen, 2 unseen


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 22)):
        for k, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            color = np.array([60 * k, 255 - 60 * k, 40 * k])
            for i in range(n):
                img = np.clip(color + rng.integers(-40, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def test_clip_methods_run_end_to_end(folder: Path, tmp_path: Path) -> None:
    tiny = make_tiny_clip(tmp_path / "tiny")
    out = tmp_path / "acc.json"
    argv = ["--data", f"imagefolder:{folder}", "--methods", "clip,clip-text"]
    argv += ["--clip-model", TINY_NAME, "--pretrained", tiny["file"], "--episodes", "5"]
    assert accuracy.main([*argv, "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = {(r["method"], r["protocol"], r["metric"]): r["value"] for r in doc["results"]}
    for method in ("clip", "clip-text"):
        for key in (("seed", "top1"), ("episodes", "top1"), ("retrieval", "map@r")):
            assert 0.0 <= rows[(method, *key)] <= 1.0
    fit = doc["methods"]["clip-text"]["text_weight_fit"]
    assert fit["n_classes"] == 2 and fit["chosen_on"].startswith("seen classes")
    assert doc["methods"]["clip"]["weights_path"] == tiny["file"]
    # Retrieval compares images only: both methods share the model, so it must agree.
    assert rows[("clip", "retrieval", "map@r")] == rows[("clip-text", "retrieval", "map@r")]


def test_random_weights_are_marked_in_results(folder: Path, tmp_path: Path) -> None:
    make_tiny_clip(tmp_path / "tiny")
    out = tmp_path / "acc.json"
    argv = ["--data", f"imagefolder:{folder}", "--methods", "clip", "--protocol", "seed"]
    assert (
        accuracy.main([*argv, "--clip-model", TINY_NAME, "--pretrained", "none", "--out", str(out)])
        == 0
    )
    doc = json.loads(out.read_text())
    assert {r["method"] for r in doc["results"]} == {"clip[random-weights]"}
    assert doc["methods"]["clip[random-weights]"]["random_weights"] is True
