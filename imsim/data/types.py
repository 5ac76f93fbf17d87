"""In-memory dataset representation shared by every stage.

Images are uint8 arrays of shape (N, H, W, 3) in RGB order: the one input format of every method
and backend, so a dataset never needs to know which method will consume it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassSplit:
    """Which classes a method may learn from (seen) and which it is evaluated on (unseen)."""

    seen: tuple[int, ...]
    unseen: tuple[int, ...]

    def __post_init__(self) -> None:
        overlap = set(self.seen) & set(self.unseen)
        if overlap:
            raise ValueError(f"classes {sorted(overlap)} are both seen and unseen")
        if not self.unseen:
            raise ValueError("a class split needs at least one unseen class")


@dataclass
class Split:
    """One split (train or test) of a dataset: images in file order, with integer labels."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    paths: list[str] | None = None  # source file of each image, where there is one

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, classes: tuple[int, ...] | list[int]) -> Split:
        """The images of the given classes, keeping file order."""
        keep = np.flatnonzero(np.isin(self.labels, np.asarray(classes)))
        paths = [self.paths[i] for i in keep] if self.paths is not None else None
        return Split(self.images[keep], self.labels[keep], paths)


class Dataset:
    """A named dataset with train and test splits, class names and its default class split.

    ``train`` may be given as a callable: it is then loaded on first access, since evaluation
    alone never needs it.
    """

    def __init__(
        self,
        name: str,
        class_names: list[str],
        train: Split | Callable[[], Split],
        test: Split,
        split: ClassSplit,
        info: dict | None = None,
    ) -> None:
        self.name = name
        self.class_names = list(class_names)
        self._train = train
        self.test = test
        self.split = split
        self.info = dict(info or {})  # provenance recorded in results (source, seed, ...)

    @property
    def train(self) -> Split:
        if callable(self._train):
            self._train = self._train()
        return self._train

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.test.images.shape[1]), int(self.test.images.shape[2]))
