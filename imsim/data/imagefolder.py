"""``imagefolder:PATH``: a ``{train,test}/<class>/<image>`` tree, as a folder or inside a zip.

Images are decoded under the one policy of ``imsim.data.images`` (EXIF orientation applied,
16-bit scaled to 8, RGB, alpha on black, decompression-bomb limit) and resized to a common size.
Files that cannot be decoded or are too large are skipped and each one is reported by name; a
class left without images is an error.
"""

from __future__ import annotations

import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from imsim.data.images import ImageError, decode_image
from imsim.data.types import ClassSplit, Dataset, Split
from imsim.errors import UserError

__all__ = ["EXTENSIONS", "decode_image", "load_imagefolder"]

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
SPLITS = ("train", "test")
# What reading one file of a folder or zip can raise: I/O errors, a bad CRC or deflate stream,
# an encrypted or unsupported zip member.
READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError)


class _Tree:
    """Uniform read access to a folder or a zip: relative POSIX paths to bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile as e:
                raise UserError(f"{path} is not a readable zip file ({e})") from e
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
            self.prefix = _common_root(names)
            self.files = [n[len(self.prefix) :] for n in names]
        elif path.is_dir():
            self.prefix = ""
            self.files = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        else:
            raise UserError(f"imagefolder path {path} does not exist")

    def read(self, rel: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(self.prefix + rel)
        return (self.path / rel).read_bytes()


def _common_root(names: list[str]) -> str:
    """The single top folder of a zip (e.g. 'cifar10/') when train/ and test/ sit below it."""
    for n in names:
        parts = PurePosixPath(n).parts
        if len(parts) >= 4 and parts[1] in SPLITS:
            return parts[0] + "/"
    return ""


def _listing(tree: _Tree) -> dict[str, dict[str, list[str]]]:
    """split -> class -> sorted files."""
    out: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for rel in tree.files:
        parts = PurePosixPath(rel).parts
        if len(parts) != 3 or parts[0] not in SPLITS or parts[2].startswith("."):
            continue
        if PurePosixPath(rel).suffix.lower() not in EXTENSIONS:
            continue
        out[parts[0]].setdefault(parts[1], []).append(rel)
    for split in out.values():
        for files in split.values():
            files.sort()
    return out


def _iter_decoded(
    tree: _Tree, files: list[str], size: int, desc: str
) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    for rel in tqdm(files, desc=desc, unit="img", leave=False, mininterval=1.0):
        try:
            yield rel, decode_image(tree.read(rel), size, name=rel), None
        except ImageError as e:  # the one decoding policy: undecodable or too large, by name
            yield rel, None, e.reason
        except READ_ERRORS as e:  # the file itself could not be read (folder or zip member)
            yield rel, None, f"cannot be read ({type(e).__name__}: {e})"


def _load_split(
    tree: _Tree,
    by_class: dict[str, list[str]],
    classes: list[str],
    size: int,
    split: str,
    skipped: list[str],
) -> Split:
    files = [f for c in classes for f in by_class.get(c, [])]
    label_of = {c: i for i, c in enumerate(classes)}
    images, labels, paths = [], [], []
    for rel, img, err in _iter_decoded(tree, files, size, f"decode {split}"):
        if img is None:
            print(f"warning: skipping {tree.path}:{rel}: {err}", file=sys.stderr)
            skipped.append(rel)
            continue
        images.append(img)
        labels.append(label_of[PurePosixPath(rel).parts[1]])
        paths.append(rel)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UserError(f"{tree.path}: no readable images in {split}/ for classes {empty}")
    return Split(np.stack(images), np.asarray(labels), paths)


def default_unseen(classes: list[str]) -> list[str]:
    """The default class split: first half of the sorted names seen, the rest unseen."""
    return classes[len(classes) // 2 :]


def load_imagefolder(
    path: str | Path, unseen: list[str] | None = None, image_size: int = 32
) -> Dataset:
    """Load a {train,test}/<class>/ tree (folder or zip); returns a Dataset with lazy train."""
    if image_size < 1:
        raise UserError(f"the image size must be at least 1 pixel, got {image_size}")
    tree = _Tree(Path(path))
    listing = _listing(tree)
    if not listing["test"]:
        raise UserError(f"{path}: expected test/<class>/<image> files (and train/ for training)")
    classes = sorted(set(listing["test"]) | set(listing["train"]))
    unseen_names = list(unseen) if unseen else default_unseen(classes)
    unknown = sorted(set(unseen_names) - set(classes))
    if unknown:
        raise UserError(f"unseen classes {unknown} are not in {path}; its classes: {classes}")
    unseen_idx = tuple(classes.index(c) for c in unseen_names)
    seen_idx = tuple(i for i in range(len(classes)) if i not in unseen_idx)
    skipped: list[str] = []

    def train() -> Split:
        if not listing["train"]:
            raise UserError(f"{path}: no train/<class>/ images; training needs them")
        return _load_split(tree, listing["train"], classes, image_size, "train", skipped)

    test = _load_split(tree, listing["test"], classes, image_size, "test", skipped)
    return Dataset(
        name=f"imagefolder:{Path(path).name}",
        class_names=classes,
        train=train,
        test=test,
        split=ClassSplit(seen=seen_idx, unseen=unseen_idx),
        info={"source": str(path), "image_size": image_size, "skipped": skipped},
    )
