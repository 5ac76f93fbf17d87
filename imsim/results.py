"""The one results schema every command writes and the environment it ran in.

A results file is a JSON object: ``schema``, ``kind`` (accuracy, parity, fps, ...), ``created``,
``env`` (machine, packages, git commit), ``config`` (what was asked for) and ``results``, a list
of flat records with at least ``method``, ``protocol``, ``metric`` and ``value``. Documents are
written with ``write_json_atomic`` (``imsim.files``, importable from here too).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from imsim.errors import UserError
from imsim.files import package_versions
from imsim.files import write_json_atomic as write_json_atomic  # where results writers import it
from imsim.hardware import capabilities, cpu_info

SCHEMA = "imsim.results/1"
PACKAGES = (
    "imsim",
    "numpy",
    "torch",
    "torchvision",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "open_clip_torch",
    "scikit-image",
    "numba",
    "pytorch-metric-learning",
    "tensorrt",
    "openvino",
)


def record(method: str, protocol: str, metric: str, value: float, **extra: Any) -> dict[str, Any]:
    """One result row; ``extra`` holds ci95, chance, n, k and anything else worth keeping."""
    row: dict[str, Any] = {
        "method": method,
        "protocol": protocol,
        "metric": metric,
        "value": float(value),
    }
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


# CPU features that decide which kernels run (AVX-512, bf16 dot products, AMX tiles).
CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_fp16",
    "amx_tile",
)


def cpu_flags() -> list[str]:
    """The decisive CPU features (``CPU_FLAGS``) this machine has."""
    have = cpu_info()[1]
    return [f for f in CPU_FLAGS if f in have]


def _gpu_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    """Where a result was measured: CPU, threads, GPU, package versions and git commit."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_info()[0],
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "hardware": {"cpu": capabilities("cpu").to_dict()},
        "packages": package_versions(PACKAGES),
        "git_commit": _git_commit(),
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
            env["cudnn"] = torch.backends.cudnn.version()
            env["gpu_driver"] = _gpu_driver()
            env["hardware"]["cuda"] = capabilities("cuda").to_dict()
    except ImportError:
        pass
    return env


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``.`` at worst)."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return p
    return Path(".")


def _probe_writable(folder: Path, what: str) -> None:
    """Create and remove a file in ``folder``: the only test of writability that cannot lie
    (permission bits say nothing of read-only mounts, ACLs or a full disk's inodes)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{what}: cannot write in {folder} ({e.strerror or e})") from None


def check_output_file(path: str | Path | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output file path that could not be written at the end.

    A path to an existing folder, a path below an existing file, or one whose nearest existing
    folder is not writable gives one line naming ``flag``; missing parent folders are fine
    (writers create them). ``None`` (a default decided later) is not checked.
    """
    if path is None:
        return
    p = Path(path)
    if str(path).endswith(("/", os.sep)) or p.is_dir():
        raise UserError(f"{flag} {path} is a folder; give the path of a file to write")
    base = _nearest_existing(p.parent)
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {base} is a file, not a folder")
    _probe_writable(base, f"{flag} {path}")


def check_output_dir(path: str | Path | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that could not be written at the end: an
    existing file, a path below a file, or a folder (or nearest existing parent) that is not
    writable. A missing folder is fine (writers create it)."""
    if path is None:
        return
    p = Path(path)
    if (p.exists() or p.is_symlink()) and not p.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {base} is a file, not a folder")
    _probe_writable(base, f"{flag} {path}")


def make_results(kind: str, results: list[dict], config: dict, **sections: Any) -> dict:
    """A complete results document."""
    return {
        "schema": SCHEMA,
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "env": environment(),
        "config": config,
        **sections,
        "results": results,
    }
