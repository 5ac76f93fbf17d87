"""CIFAR-100 in torchvision's on-disk format (``cifar-100-python/{train,test,meta}``).

The files are Python pickles. They are read with an unpickler that only admits the numpy types
the format needs, so a tampered file cannot run code; the download itself is checked against the
archive's published MD5 by torchvision's downloader. (torchvision's ``CIFAR100`` dataset class
would unpickle without restriction and refuses files whose MD5 differs, such as test fixtures,
hence this small reader.)
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from imsim.data.types import ClassSplit, Dataset, Split
from imsim.errors import UserError

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FOLDER = "cifar-100-python"

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(
            f"{path} is not a valid CIFAR-100 file ({e}); delete it and re-download"
        ) from e


def download(root: Path) -> None:
    """Fetch and unpack the official archive into ``root`` (needs internet)."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(URL, str(root), filename=URL.rsplit("/", 1)[1], md5=MD5)
    except Exception as e:  # network errors come in many types (URLError, OSError, HTTPError)
        raise UserError(
            f"could not download CIFAR-100 from {URL} ({e}); download it elsewhere and pass "
            f"--data-dir pointing to the folder that holds {FOLDER}/"
        ) from e


def _split(d: dict) -> Split:
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"CIFAR-100 data has shape {data.shape}, expected (N, 3072)")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in d.get("filenames", [])]
    return Split(images, np.asarray(d["fine_labels"]), names or None)


def load_cifar100(data_dir: str | Path = "data", download_if_missing: bool = False) -> Dataset:
    """CIFAR-100 with fine labels; classes 0-89 seen, 90-99 unseen (the reference study's split)."""
    root = Path(data_dir)
    folder = root / FOLDER
    if not (folder / "test").is_file():
        if not download_if_missing:
            raise UserError(
                f"CIFAR-100 not found in {folder}/; add --download (needs internet) or pass "
                f"--data-dir DIR where DIR/{FOLDER}/ holds train, test and meta"
            )
        download(root)
    meta = _load_pickle(folder / "meta")
    names = [n.decode() if isinstance(n, bytes) else n for n in meta["fine_label_names"]]
    return Dataset(
        name="cifar100",
        class_names=names,
        train=lambda: _split(_load_pickle(folder / "train")),
        test=_split(_load_pickle(folder / "test")),
        split=ClassSplit(seen=tuple(range(90)), unseen=tuple(range(90, 100))),
        info={"source": str(folder)},
    )
