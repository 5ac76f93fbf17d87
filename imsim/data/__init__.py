"""Datasets: ``cifar100``, ``imagefolder:PATH`` (folder or zip) and the synthetic ``shapes``."""

from __future__ import annotations

from pathlib import Path

from imsim.data.types import ClassSplit, Dataset, Split
from imsim.errors import UserError

__all__ = ["ClassSplit", "Dataset", "Split", "load_dataset", "with_unseen"]


def with_unseen(ds: Dataset, unseen: list[str]) -> Dataset:
    """The same dataset with a class split that holds out the named classes."""
    unknown = sorted(set(unseen) - set(ds.class_names))
    if unknown:
        raise UserError(f"unseen classes {unknown} are not in {ds.name}")
    idx = tuple(ds.class_names.index(c) for c in unseen)
    ds.split = ClassSplit(seen=tuple(i for i in range(len(ds.class_names)) if i not in idx),
                          unseen=idx)
    return ds


def load_dataset(
    spec: str,
    data_dir: str | Path = "data",
    download: bool = False,
    seed: int = 0,
    unseen: list[str] | None = None,
    image_size: int = 32,
) -> Dataset:
    """Load a dataset by its ``--data`` spec; ``unseen`` overrides its default class split."""
    if spec == "cifar100":
        from imsim.data.cifar100 import load_cifar100

        ds = load_cifar100(data_dir, download_if_missing=download)
    elif spec == "shapes":
        from imsim.data.shapes import load_shapes

        ds = load_shapes(seed=seed)
    elif spec.startswith("imagefolder:"):
        from imsim.data.imagefolder import load_imagefolder

        return load_imagefolder(spec.split(":", 1)[1], unseen=unseen, image_size=image_size)
    else:
        raise UserError(f"unknown dataset {spec!r}; use cifar100, shapes or imagefolder:PATH")
    return with_unseen(ds, unseen) if unseen else ds
