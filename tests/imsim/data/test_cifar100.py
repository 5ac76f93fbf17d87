import functools
import hashlib
import http.server
import pickle
import tarfile
import threading

import numpy as np
import pytest

from imsim.data import cifar100 as c100
from imsim.data import load_dataset
from imsim.errors import UserError
from imsim.protocols.seed import seed_split


def _write_cifar(root, test_labels, n_train=20, seed=0):
    """A CIFAR-100-format folder (pickled dicts, like the real files) with the given test labels."""
    rng = np.random.default_rng(seed)
    folder = root / c100.FOLDER
    folder.mkdir(parents=True)
    for name, labels in (("train", rng.integers(0, 100, n_train)), ("test", test_labels)):
        d = {
            "filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))],
            "fine_labels": [int(x) for x in labels],
            "coarse_labels": [0] * len(labels),
            "data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, f)
    return folder


def test_seed_split_reproduces_exact_indices(tmp_path):
    # Shuffled test set: 8 images per class for the 10 unseen classes plus some seen ones.
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.concatenate([np.repeat(np.arange(90, 100), 8), np.arange(0, 20)]))
    _write_cifar(tmp_path, labels)
    ds = load_dataset("cifar100", data_dir=tmp_path)
    assert ds.split.unseen == tuple(range(90, 100))
    assert ds.test.images.shape == (len(labels), 32, 32, 3)
    np.testing.assert_array_equal(ds.test.labels, labels)

    support, query = seed_split(ds.test.labels, ds.split.unseen)
    expected_support = sorted(i for c in range(90, 100) for i in np.flatnonzero(labels == c)[:5])
    expected_query = sorted(i for c in range(90, 100) for i in np.flatnonzero(labels == c)[5:])
    assert support.tolist() == expected_support
    assert query.tolist() == expected_query
    assert len(support) == 50 and len(query) == 30


def test_pixel_layout_is_channel_planes_to_hwc(tmp_path):
    folder = _write_cifar(tmp_path, np.arange(90, 100))
    raw = pickle.loads((folder / "test").read_bytes())["data"]
    ds = load_dataset("cifar100", data_dir=tmp_path)
    # CIFAR stores 1024 red values, then green, then blue, row-major.
    assert ds.test.images[3, 0, 1, 0] == raw[3, 1]
    assert ds.test.images[3, 2, 0, 1] == raw[3, 1024 + 64]
    assert ds.test.images[3, 31, 31, 2] == raw[3, 3071]


def test_missing_offline_gives_instructions(tmp_path):
    with pytest.raises(UserError, match="--download"):
        load_dataset("cifar100", data_dir=tmp_path / "nowhere")


def test_refuses_code_in_pickle(tmp_path):
    folder = _write_cifar(tmp_path, np.arange(90, 100))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "test", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(UserError, match="not a valid CIFAR-100 file"):
        load_dataset("cifar100", data_dir=tmp_path)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_fetches_and_verifies_archive(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _write_cifar(src, np.arange(90, 100))
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / c100.FOLDER, arcname=c100.FOLDER)
    # Serve the archive over HTTP on loopback, the way the real download reaches it.
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{archive.name}"
        monkeypatch.setattr(c100, "URL", url)
        monkeypatch.setattr(c100, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
        ds = load_dataset("cifar100", data_dir=tmp_path / "data", download=True)
        assert len(ds.test) == 10 and ds.class_names[95] == "class95"
        # A corrupted download fails the checksum and is reported, not loaded.
        monkeypatch.setattr(c100, "MD5", "0" * 32)
        with pytest.raises(UserError, match="could not download"):
            load_dataset("cifar100", data_dir=tmp_path / "data2", download=True)
    finally:
        server.shutdown()


def test_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(c100, "URL", (tmp_path / "absent.tar.gz").as_uri())
    with pytest.raises(UserError, match="could not download CIFAR-100"):
        load_dataset("cifar100", data_dir=tmp_path / "data", download=True)
