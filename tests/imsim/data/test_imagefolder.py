import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from imsim.data import load_dataset
from imsim.errors import UserError


def _png(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _tree_files():
    """(relative path, bytes) of a small tree with odd and bad files mixed in."""
    rng = np.random.default_rng(0)
    files = []
    for split, n in (("train", 3), ("test", 6)):
        for ci, cls in enumerate(["ant", "bee", "cat", "dog"]):
            for i in range(n):
                color = np.full((32, 32, 3), 40 * ci + 10, np.uint8)
                files.append((f"{split}/{cls}/{i:03d}.jpg", _jpg(color)))
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    rgba = np.dstack([np.full((32, 32, 3), 200, np.uint8), np.full((32, 32), 0, np.uint8)])
    files += [
        ("test/ant/zz_gray.png", _png(gray, "L")),
        ("test/bee/zz_rgba.png", _png(rgba, "RGBA")),
        ("test/cat/zz_big.png", _png(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))),
        ("test/dog/zz_corrupt.jpg", b"\xff\xd8\xff\xe0 not really a jpeg"),
        ("test/dog/notes.txt", b"not an image, ignored"),
    ]
    return files


def _write_dir(root):
    for rel, data in _tree_files():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _write_zip(path, top="gallery/"):
    with zipfile.ZipFile(path, "w") as z:
        for rel, data in _tree_files():
            z.writestr(top + rel, data)
    return path


@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_reads_tree_handles_odd_and_bad_files(tmp_path, kind, capsys):
    path = _write_dir(tmp_path / "t") if kind == "dir" else _write_zip(tmp_path / "t.zip")
    ds = load_dataset(f"imagefolder:{path}")
    assert ds.class_names == ["ant", "bee", "cat", "dog"]
    # Default split: first half seen, rest unseen.
    assert ds.split.seen == (0, 1) and ds.split.unseen == (2, 3)
    # 6 per class + gray (ant) + rgba (bee) + big (cat); the corrupt jpg is skipped, txt ignored.
    assert np.bincount(ds.test.labels).tolist() == [7, 7, 7, 6]
    assert ds.test.images.shape[1:] == (32, 32, 3) and ds.test.images.dtype == np.uint8
    err = capsys.readouterr().err
    assert "zz_corrupt.jpg" in err and "skipping" in err
    assert ds.info["skipped"] == ["test/dog/zz_corrupt.jpg"]
    # File order within a class is sorted by name.
    assert ds.test.paths[:7][-1] == "test/ant/zz_gray.png"
    # RGBA composited on black where fully transparent; grayscale replicated to 3 channels.
    rgba = ds.test.images[ds.test.paths.index("test/bee/zz_rgba.png")]
    assert rgba.max() == 0
    gray = ds.test.images[ds.test.paths.index("test/ant/zz_gray.png")]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    # Train is loaded lazily and labelled with the same class indices.
    assert np.bincount(ds.train.labels).tolist() == [3, 3, 3, 3]


def test_unseen_override_and_unknown_class(tmp_path):
    path = _write_dir(tmp_path / "t")
    ds = load_dataset(f"imagefolder:{path}", unseen=["ant", "dog"])
    assert ds.split.unseen == (0, 3) and ds.split.seen == (1, 2)
    with pytest.raises(UserError, match="not in"):
        load_dataset(f"imagefolder:{path}", unseen=["zebra"])


def test_image_size_resizes(tmp_path):
    ds = load_dataset(f"imagefolder:{_write_dir(tmp_path / 't')}", image_size=16)
    assert ds.test.images.shape[1:] == (16, 16, 3)


def test_errors_are_actionable(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "bad.zip").write_bytes(b"nope")
    with pytest.raises(UserError, match="not a readable zip"):
        load_dataset(f"imagefolder:{tmp_path / 'bad.zip'}")
    (tmp_path / "empty" / "test" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "test" / "b").mkdir(parents=True)
    (tmp_path / "empty" / "test" / "b" / "x.png").write_bytes(b"corrupt")
    with pytest.raises(UserError, match="test/"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("mnist")


@pytest.mark.realdata
def test_real_cifar10_zip(cifar10_zip):
    ds = load_dataset(f"imagefolder:{cifar10_zip}")
    assert len(ds.test) == 10_000
    assert np.bincount(ds.test.labels).tolist() == [1000] * 10
    assert [ds.class_names[c] for c in ds.split.unseen] == ["dog", "frog", "horse", "ship", "truck"]
    assert ds.test.images.std() > 30  # natural images, not blank decodes
