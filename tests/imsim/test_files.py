"""``imsim.files``: the one atomic writer (whole file or nothing, fsynced, usual mode), the one
file hash and the one package-version lookup."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from imsim import files


def test_writers_replace_the_file_whole_and_leave_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "out.json"
    assert files.write_json_atomic(target, {"b": 1, "a": [1.5, Path("x")]}) == target
    assert target.read_text() == json.dumps({"b": 1, "a": [1.5, "x"]}, indent=2) + "\n"
    files.write_text_atomic(target, "héllo")
    assert target.read_bytes() == "héllo".encode()
    files.write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_the_file_gets_the_usual_mode_not_mkstemps(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = files.write_bytes_atomic(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_the_bytes_are_fsynced_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append("fsync dir" if os.path.isdir(target) else f"fsync {os.path.getsize(fd)}")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    files.write_bytes_atomic(tmp_path / "f.bin", b"12345")
    assert events == ["fsync 5", "replace", "fsync dir"]


def test_a_failed_write_removes_its_temporary_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt  # interrupted too, not only errors

    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_callback_writer_can_hand_the_path_to_a_library(tmp_path: Path) -> None:
    target = tmp_path / "v.npy"

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a path, np.save would append ".npy"
            np.save(f, np.arange(3), allow_pickle=False)

    files.write_atomic(target, save)
    assert np.load(target).tolist() == [0, 1, 2]


def test_sha256_file_is_the_hash_of_the_bytes(tmp_path: Path) -> None:
    data = os.urandom(3 * 1000 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert files.sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert files.sha256_file(path, chunk=1000) == hashlib.sha256(data).hexdigest()


def test_package_versions_names_only_what_is_installed() -> None:
    found = files.package_versions(["numpy", "surely-not-installed-imsim-pkg"])
    assert found == {"numpy": np.__version__}
