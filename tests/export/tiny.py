"""Small stand-ins for the INT8 and gate tests: a dataset of a few coloured-blob classes (fast to
build, unlike ``shapes`` or CIFAR-10), and a network with one block INT8 cannot represent and one
block FP16 cannot, so the FP32 fallback has something real to find.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imsim.data.types import ClassSplit, Dataset, Split
from imsim.methods import registry
from tests import nets

SEEN, UNSEEN = (0, 1, 2, 3), (4, 5)
# Each class has its own colour, so an image's class (and whether it is seen) can be read from its
# pixels; the unseen ones are as bright as the seen ones (inside the calibrated ranges).
COLOURS = [
    (220, 40, 40),
    (40, 200, 40),
    (40, 60, 220),
    (210, 200, 40),
    (200, 40, 200),
    (40, 200, 200),
]


def split(per_class: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c, colour in enumerate(COLOURS):
        base = np.broadcast_to(np.array(colour, np.int16), (per_class, 32, 32, 3))
        noise = rng.integers(-35, 36, (per_class, 32, 32, 3))
        x = np.clip(base + noise, 0, 255).astype(np.uint8)
        for i in range(per_class):  # a blob at a random place, so images of a class differ
            r, q = rng.integers(4, 24, 2)
            x[i, r : r + 8, q : q + 8] = rng.integers(0, 256, 3)
        images.append(x)
        labels += [c] * per_class
    return Split(np.concatenate(images), np.array(labels))


def dataset(train: int = 40, test: int = 30) -> Dataset:
    names = [f"class{c}" for c in range(len(COLOURS))]
    return Dataset("tiny", names, split(train, 1), split(test, 2), ClassSplit(SEEN, UNSEEN))


def seen_colour(images: np.ndarray) -> np.ndarray:
    """The class each image's mean colour is nearest to (a check that reads pixels, not labels)."""
    mean = images.reshape(len(images), -1, 3).mean(axis=1)
    d = ((mean[:, None, :] - np.array(COLOURS, float)[None]) ** 2).sum(-1)
    return d.argmin(axis=1)


class Block(nn.Module):
    """relu(conv(x)), computed through a rescaling that is exact in FP32 but not elsewhere:
    ``outlier`` scales the conv's input channels by 1e-2 ... 1e2 (and its weights inversely), so a
    per-tensor INT8 scale, set by the largest channel, flattens the small ones to 0; ``overflow``
    scales the conv's weights by 1e7 and its output by 1e-7: weights beyond FP16's largest value
    (65504), a factor below its smallest normal one."""

    def __init__(self, c: int, outlier: bool = False, overflow: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        gain = torch.ones(1, c, 1, 1)
        self.out_scale = 1e-7 if overflow else 1.0
        with torch.no_grad():
            if outlier:
                gain = torch.logspace(-2, 2, c).view(1, c, 1, 1)
                self.conv.weight /= gain.view(1, c, 1, 1)
            if overflow:
                self.conv.weight *= 1e7
                self.conv.bias *= 1e7
        self.register_buffer("gain", gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out_scale != 1.0:
            return F.relu(self.conv(x) * self.out_scale)
        return F.relu(self.conv(x * self.gain))


class HostileNet(nn.Module):
    """Preprocess, a stem conv, three blocks (plain, INT8-hostile, FP16-hostile), pooling, a
    linear head, L2 normalization."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nets.Preprocess(32)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList([Block(16), Block(16, outlier=True), Block(16, overflow=True)])
        self.head = nn.Linear(16, 24)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(self.pre(images)))
        for b in self.blocks:
            x = b(x)
        return F.normalize(self.head(x.mean(dim=(2, 3))), dim=1)


def hostile_module(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return HostileNet().eval()


def register(monkeypatch: pytest.MonkeyPatch) -> None:
    """``test-convnet``/``test-vit`` (``tests.nets``) and ``test-hostile`` as methods, and the
    tiny dataset as what every command loads."""
    nets.register(monkeypatch)

    def factory(arg: str | None = None, **_: object) -> nets.NetEmbedder:
        return nets.NetEmbedder("test-hostile", hostile_module())

    entry = registry.Entry("test-hostile", factory, in_all=False, help="test network")
    monkeypatch.setitem(registry._REGISTRY, "test-hostile", entry)
    ds = dataset()
    monkeypatch.setattr("export.__main__.load_data_from_args", lambda args: ds)
