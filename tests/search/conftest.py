"""Fixtures for the search tests: generated galleries and a registered text-capable method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imsim.data.shapes import load_shapes
from imsim.methods import registry
from tests.search.helpers import ColorWordsEmbedder, save_png


@pytest.fixture
def color_words(monkeypatch: pytest.MonkeyPatch) -> type[ColorWordsEmbedder]:
    """Register ``color-words`` for the duration of one test."""
    registry.list_methods()  # import the built-in methods first
    entry = registry.Entry("color-words", lambda **_: ColorWordsEmbedder(), False, "test")
    monkeypatch.setitem(registry._REGISTRY, "color-words", entry)
    return ColorWordsEmbedder


@pytest.fixture(scope="session")
def shapes_small() -> tuple[np.ndarray, list[str]]:
    """60 generated shapes images (10 unseen classes x 6) and their class names."""
    ds = load_shapes(seed=3, train_per_class=1, test_per_class=6)
    pool = ds.test.subset(ds.split.unseen)
    return pool.images, [ds.class_names[c] for c in pool.labels]


@pytest.fixture
def shapes_folder(tmp_path: Path, shapes_small: tuple[np.ndarray, list[str]]) -> Path:
    """The 60 images as PNG files in <class>/<n>.png folders."""
    images, labels = shapes_small
    root = tmp_path / "gallery"
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        save_png(root / label / f"{i:03d}.png", img)
    return root
