"""Files written whole or not at all, their SHA-256, and the versions of installed packages.

Every file the toolkit writes (results JSON, checkpoints, ONNX graphs, engines, reports) goes
through ``write_atomic``: the bytes land in a temporary file beside the target, are flushed to
disk (``fsync``) and renamed over it, so a reader, a crash or a full disk never leaves a
half-written file under the real name, and a failed write removes its temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any


def _fsync_path(path: Path, directory: bool = False) -> None:
    """Flush ``path``'s data (or a folder's entries) to disk, whichever descriptor wrote them."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it and rename it into place.

    ``write`` may open the path itself or hand it to a library (``onnx.save``, a TensorRT
    builder); whatever it leaves there becomes ``path``, with the usual file mode (0666 less the
    umask, not mkstemp's 0600). On any error the temporary file is removed and ``path`` is left
    as it was. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _fsync_path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Make the rename itself durable; some file systems cannot sync a folder, and then the
    # file's own bytes are on disk all the same.
    with contextlib.suppress(OSError):
        _fsync_path(path.parent, directory=True)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (``write_atomic``)."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all (``write_atomic``)."""
    return write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON plus a newline (anything not JSON becomes its ``str``)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (engines and graphs can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """``{distribution: version}`` for those of ``names`` that are installed (others are left
    out, so a record says what ran, never what might have)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
