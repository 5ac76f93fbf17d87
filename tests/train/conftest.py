"""A tiny shapes-like dataset (8 classes, 6 seen + 2 unseen) for fast training tests."""

from __future__ import annotations

import numpy as np
import pytest

from imsim.data import ClassSplit, Dataset, Split
from imsim.data.shapes import COLORS, SHAPES, render

# (shape, color) per class: distinct shapes and colors so a few steps can separate them.
COMBOS = ((0, 0), (1, 3), (2, 6), (3, 8), (5, 1), (7, 4), (8, 7), (9, 9))


def make_tiny(train_per_class: int = 16, test_per_class: int = 20, seed: int = 0) -> Dataset:
    def split(per_class: int, salt: int) -> Split:
        labels = np.repeat(np.arange(len(COMBOS)), per_class)
        combos = np.asarray(COMBOS)[labels]
        rng = np.random.default_rng([seed, salt])
        return Split(render(combos[:, 0], combos[:, 1], rng), labels)

    return Dataset(
        name="tiny-shapes",
        class_names=[f"{COLORS[c]}_{SHAPES[s]}" for s, c in COMBOS],
        train=split(train_per_class, 0),
        test=split(test_per_class, 1),
        split=ClassSplit(seen=tuple(range(6)), unseen=(6, 7)),
    )


@pytest.fixture(scope="session")
def tiny() -> Dataset:
    return make_tiny()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny networks gain nothing from threads, and on a shared machine they lose a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
