"""Batches for one epoch: class-balanced (default recipe) or the study's random triplets/pairs.

Every epoch's plan is drawn from generators seeded by (seed, epoch), and augmentation draws from
torch's generator seeded the same way, so an epoch is a pure function of the model state, the
seed and the epoch number: what makes ``--resume`` reproduce an uninterrupted run.

The uint8 image bank lives on the training device, and a batch is gathered, converted and
augmented there as whole-batch tensor ops (one gather, one reflect pad, one indexed crop+flip):
on a GPU a per-sample transform loop launched hundreds of tiny kernels per batch after a gather
and a pageable copy on the CPU. The crop offsets and flips are drawn on the CPU generator (a few
hundred numbers per batch), so a batch is the same on every device.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning.samplers import MPerClassSampler

from imsim.models import Preprocess
from train.augment import simclr_views


def crop_flip(
    x: torch.Tensor, pad: int, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """Per-sample crops of the reflect-padded batch ``x`` (N, C, H, W) at (``top``, ``left``)
    (each in [0, 2 * pad]), mirrored left-right where ``flip``: torchvision's
    ``RandomCrop(H, padding=pad, padding_mode="reflect")`` then ``RandomHorizontalFlip`` with
    these draws, for the whole batch in one indexing op."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dev = x.device
    rows = top.to(dev)[:, None] + torch.arange(h, device=dev)  # (N, H)
    cols = left.to(dev)[:, None] + torch.arange(w, device=dev)  # (N, W)
    cols = torch.where(flip.to(dev)[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``crop_flip`` with offsets and flips drawn per sample from torch's (CPU) generator."""
    n = len(x)
    draws = torch.randint(0, 2 * pad + 1, (2, n))
    flip = torch.rand(n) < 0.5
    return crop_flip(x, pad, draws[0], draws[1], flip)


class ImageBank:
    """The training images (uint8 NHWC, kept on the training device) and labels; turns index
    arrays into float batches on that device."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        preprocess: Preprocess,
        augment: str,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        images = np.ascontiguousarray(images)
        if augment == "frozen-flip":
            # The study's bug, kept for --recipe seed: one flip decision per image, made once.
            flip = np.random.default_rng([seed, 7]).random(len(images)) < 0.5
            images = images.copy()
            images[flip] = images[flip, :, ::-1]
            self.pad: int | None = None
        elif augment == "crop+flip":
            self.pad = preprocess.size // 8  # each sample gets its own crop and flip
        elif augment == "simclr":
            self.pad = None  # each sample gets its own resized crop, flip and colour jitter
        else:
            raise ValueError(f"unknown augmentation {augment!r}")
        self.augment = augment
        self.device = torch.device(device)
        self.images = torch.from_numpy(images).to(self.device)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._labels = torch.from_numpy(self.labels).to(self.device)
        self.preprocess = preprocess.to(self.device)

    def __len__(self) -> int:
        return len(self.labels)

    def _index(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.device)

    def unit(self, idx: np.ndarray) -> torch.Tensor:
        """Float NCHW in [0, 1] (augmented, on the training device) for the images at ``idx``."""
        x = self.preprocess.to_unit(self.images[self._index(idx)])
        if self.pad is not None:
            x = random_crop_flip(x, self.pad)
        elif self.augment == "simclr":
            x = simclr_views(x)
        return x.contiguous(memory_format=torch.channels_last)

    def label_tensor(self, idx: np.ndarray) -> torch.Tensor:
        return self._labels[self._index(idx)]


def balanced_batches(
    labels: np.ndarray, batch_size: int, samples: int, seed: int, epoch: int
) -> Iterator[np.ndarray]:
    """Index batches with ``m`` images of each of ``batch_size / m`` classes (MPerClassSampler)."""
    n_classes = len(np.unique(labels))
    m = max(2, -(-batch_size // n_classes))  # enough per class to fill a batch with few classes
    while batch_size % m:
        m += 1
    np.random.seed(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0])
    sampler = MPerClassSampler(labels, m=m, batch_size=batch_size, length_before_new_iter=samples)
    order = np.fromiter(iter(sampler), dtype=np.int64)
    for i in range(0, len(order) - batch_size + 1, batch_size):
        yield order[i : i + batch_size]


class RandomDraws:
    """The study's sampling: anchor class uniform over the training classes, then a random
    positive of that class (another image) and a random image of another class."""

    def __init__(self, labels: np.ndarray) -> None:
        self.order = np.argsort(labels, kind="stable")
        classes, self.starts, self.counts = np.unique(
            labels[self.order], return_index=True, return_counts=True
        )
        if len(classes) < 2 or self.counts.min() < 2:
            raise ValueError("random triplets need 2+ classes with 2+ images each")
        self.n_classes = len(classes)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(anchor, positive, negative) image indices, ``n`` of each."""
        c = rng.integers(self.n_classes, size=n)
        a_off = (rng.random(n) * self.counts[c]).astype(np.int64)
        p_off = (a_off + 1 + (rng.random(n) * (self.counts[c] - 1)).astype(np.int64)) % self.counts[
            c
        ]
        nc = (c + 1 + rng.integers(self.n_classes - 1, size=n)) % self.n_classes
        n_off = (rng.random(n) * self.counts[nc]).astype(np.int64)
        pick = self.order
        return (
            pick[self.starts[c] + a_off],
            pick[self.starts[c] + p_off],
            pick[self.starts[nc] + n_off],
        )


def draw_batches(
    labels: np.ndarray, batch_size: int, samples: int, seed: int, epoch: int, kind: str
) -> Iterator[tuple[np.ndarray, ...]]:
    """Batches of (anchor, positive, negative) indices, or of (first, second, same) for pairs."""
    rng = np.random.default_rng([seed, epoch, 2])
    draws = RandomDraws(labels)
    for _ in range(samples // batch_size):
        a, p, n = draws.draw(rng, batch_size)
        if kind == "triplets":
            yield a, p, n
        else:
            same = rng.random(batch_size) < 0.5
            yield a, np.where(same, p, n), same
