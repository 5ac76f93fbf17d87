"""Galleries: the images an index is built from - a folder, a zip, or a dataset split.

Every gallery lists its items (a stable key, an optional label, a fingerprint that changes when
the file does) without decoding anything, so re-indexing can tell which items are new or changed
before it reads a single image. Images are decoded under the one policy of ``imsim.data.images``
(the ImageFolder dataset reader's: EXIF orientation applied, 16-bit scaled to 8 bits, RGB, alpha
composited on black, decompression-bomb limit), then bicubic-resized to a square side; queries and
thumbnails go through the same function, so a query image, a gallery image and what the page
shows are the same pixels.

File names that are not valid UTF-8 (possible on Linux) are kept as they are for reading files,
and shown through ``display_key``, which never fails to encode.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from imsim.data.imagefolder import EXTENSIONS, READ_ERRORS
from imsim.data.images import ImageError, open_rgb, to_array
from imsim.errors import UserError

if TYPE_CHECKING:
    from imsim.data import Dataset, Split

DATASET_SPLITS = ("train", "test")
DATASETS = ("shapes", "cifar100")
PREPROCESSING = (
    "EXIF orientation applied, 16-bit scaled to 8 bits, RGB (alpha composited on black), "
    "bicubic resize to image_size x image_size"
)


def display_key(key: str) -> str:
    """``key`` as text that always encodes as UTF-8 (JSON answers, printed tables).

    A file name that is not valid UTF-8 reaches Python with its bad bytes as lone surrogates,
    which no UTF-8 encoder accepts; those bytes are shown as ``\\xNN`` escapes instead.
    """
    try:
        key.encode("utf-8")
        return key
    except UnicodeEncodeError:
        raw = key.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Item:
    """One gallery image: ``key`` is unique within the gallery, ``fingerprint`` its version."""

    key: str
    label: str | None
    fingerprint: str


def resize_array(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 (H, W, 3) array resized like ``decode_image`` resizes decoded files."""
    if image.shape[:2] == (size, size):
        return image
    return np.array(Image.fromarray(image).resize((size, size), Image.BICUBIC), dtype=np.uint8)


class Gallery(ABC):
    """Base class: ``items`` in a fixed order, ``read`` gives one item's pixels or bytes."""

    items: list[Item]
    source: dict[str, Any]  # how to find the gallery again (recorded in the index manifest)
    native_size: int | None = None  # side of every image when the gallery has one fixed size

    @abstractmethod
    def read_key(self, key: str) -> bytes | np.ndarray:
        """Encoded file bytes (folders, zips) or a uint8 (H, W, 3) array (dataset splits)."""

    def image_by_key(self, key: str, size: int | None = None) -> np.ndarray:
        """One image as uint8 RGB, resized to (size, size) unless size is None."""
        data = self.read_key(key)
        if isinstance(data, np.ndarray):
            return data if size is None else resize_array(data, size)
        im = open_rgb(data, display_key(key))
        return to_array(im, max(im.size) if size is None else size)

    def image(self, i: int, size: int) -> np.ndarray:
        """Item ``i`` as uint8 (size, size, 3); raises on undecodable files."""
        return self.image_by_key(self.items[i].key, size)

    def iter_images(
        self, indices: list[int], size: int
    ) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        """(index, image or None, error or None) for each index, in order."""
        for i in indices:
            try:
                yield i, self.image(i, size), None
            except ImageError as e:  # undecodable or too large, under the one decoding policy
                yield i, None, e.reason
            except UserError as e:  # e.g. a link out of the gallery folder
                yield i, None, str(e)
            except READ_ERRORS as e:  # the file could not be read at all
                yield i, None, f"cannot be read ({type(e).__name__}: {e})"


def _label_of(rel: str) -> str | None:
    """The folder an image sits in (ImageFolder's class), or None for top-level files."""
    parent = PurePosixPath(rel).parent
    return parent.name if parent.name else None


def _is_image(rel: str) -> bool:
    p = PurePosixPath(rel)
    return p.suffix.lower() in EXTENSIONS and not any(s.startswith(".") for s in p.parts)


def _under(rel: str, under: str | None) -> bool:
    return under is None or rel.startswith(under.strip("/") + "/")


class FolderGallery(Gallery):
    """Image files below a folder; fingerprint = size and modification time."""

    def __init__(self, path: Path, under: str | None = None, list_items: bool = True) -> None:
        self.path = path.resolve()
        self.source = {"kind": "folder", "path": str(self.path), "under": under}
        self.items = []
        if not list_items:
            return
        files = sorted(
            p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
        )
        for rel in files:
            if not (_is_image(rel) and _under(rel, under)):
                continue
            st = (self.path / rel).stat()
            self.items.append(Item(rel, _label_of(rel), f"{st.st_size}:{st.st_mtime_ns}"))

    def read_key(self, key: str) -> bytes:
        path = (self.path / key).resolve()
        if not path.is_relative_to(self.path):
            raise UserError(f"{key!r} is outside the gallery folder")
        return path.read_bytes()


class ZipGallery(Gallery):
    """Image entries of a zip; fingerprint = size and CRC-32 of the content."""

    def __init__(self, path: Path, under: str | None = None) -> None:
        self.path = path.resolve()
        try:
            self.zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as e:
            raise UserError(f"{path} is not a readable zip file ({e})") from e
        infos = sorted(
            (z for z in self.zip.infolist() if not z.is_dir() and _is_image(z.filename)),
            key=lambda z: z.filename,
        )
        self.items = [
            Item(z.filename, _label_of(z.filename), f"{z.file_size}:{z.CRC:08x}")
            for z in infos
            if _under(z.filename, under)
        ]
        self.source = {"kind": "zip", "path": str(self.path), "under": under}

    def read_key(self, key: str) -> bytes:
        return self.zip.read(key)


class DatasetGallery(Gallery):
    """One split of a built-in dataset (``shapes:test``); fingerprint = hash of the pixels."""

    def __init__(self, name: str, split: str, data_dir: str | Path = "data", seed: int = 0):
        self.name, self.split, self.seed = name, split, seed
        self.data_dir = str(Path(data_dir).resolve())
        self.source = {
            "kind": "dataset",
            "name": name,
            "split": split,
            "seed": seed,
            "data_dir": self.data_dir,
        }
        data = self._split
        self.native_size = int(data.images.shape[1])
        self.items = [
            Item(
                f"{split}/{i:06d}",
                self._class_names[int(label)],
                hashlib.sha1(img.tobytes()).hexdigest(),
            )
            for i, (img, label) in enumerate(zip(data.images, data.labels, strict=True))
        ]

    @cached_property
    def _dataset(self) -> Dataset:
        from imsim.data import load_dataset

        return load_dataset(self.name, data_dir=self.data_dir, seed=self.seed)

    @property
    def _split(self) -> Split:
        return getattr(self._dataset, self.split)

    @property
    def _class_names(self) -> list[str]:
        return self._dataset.class_names

    def read_key(self, key: str) -> np.ndarray:
        split, _, num = key.partition("/")
        if split != self.split or not num.isdigit() or int(num) >= len(self._split):
            raise UserError(f"{key!r} is not an item of {self.name}:{self.split}")
        return self._split.images[int(num)]


def open_gallery(
    spec: str, under: str | None = None, data_dir: str | Path = "data", seed: int = 0
) -> Gallery:
    """A gallery from ``--images``: a folder, a .zip, or ``DATASET:SPLIT`` (e.g. shapes:test)."""
    path = Path(spec)
    if path.is_dir():
        gallery: Gallery = FolderGallery(path, under)
    elif path.is_file():
        gallery = ZipGallery(path, under)
    elif spec.partition(":")[0] in DATASETS:
        name, _, split = spec.partition(":")
        if split not in DATASET_SPLITS:
            raise UserError(f"--images {spec}: the split must be one of {DATASET_SPLITS}")
        if under:
            raise UserError("--under selects a folder inside a folder or zip gallery")
        gallery = DatasetGallery(name, split, data_dir=data_dir, seed=seed)
    else:
        raise UserError(
            f"--images {spec!r} is neither a folder, a zip file, nor a dataset split "
            f"({', '.join(f'{d}:test' for d in DATASETS)})"
        )
    if not gallery.items:
        where = f" under {under}/" if under else ""
        raise UserError(f"no images ({', '.join(sorted(EXTENSIONS))}) in {spec}{where}")
    return gallery


def gallery_from_source(source: dict[str, Any]) -> Gallery:
    """Re-open the gallery an index was built from (for thumbnails); raises UserError if gone."""
    kind = source.get("kind")
    if kind == "dataset":
        return DatasetGallery(
            source["name"], source["split"], source.get("data_dir", "data"), source.get("seed", 0)
        )
    if kind in ("folder", "zip"):
        path = Path(source["path"])
        if not path.exists():
            raise UserError(f"the indexed gallery {path} is no longer there")
        if kind == "folder":
            return FolderGallery(path, source.get("under"), list_items=False)
        return ZipGallery(path, source.get("under"))
    raise UserError(f"unknown gallery source {source!r}")


def thumbnail(data: bytes | np.ndarray, max_side: int = 256) -> tuple[bytes, str]:
    """An item as a web thumbnail, aspect ratio kept: (encoded bytes, media type).

    Small images (dataset splits) become PNG at their own size; larger ones JPEG.
    """
    im = Image.fromarray(data) if isinstance(data, np.ndarray) else open_rgb(data, "thumbnail")
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    if max(im.size) <= 64:
        im.save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue(), "image/jpeg"
