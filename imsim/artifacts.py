"""Exported artifacts: where ONNX files and engines live, their sidecars, and the hashes that tie
an artifact to the weights it came from.

Every ``M.onnx`` / ``M.fp16.onnx`` / ``M.int8.onnx`` has a JSON sidecar (``M.onnx.json``...)
holding the method, the hash of its weights and checkpoint, the input size, the embedding size,
the opset and the precision. Runtimes read the sidecar and refuse a file whose bytes or weights no
longer match it, so a stale export can never stand in silently for the current model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imsim.errors import UserError
from imsim.files import sha256_file

# engines/build.py and bench/gpu_check.py still import the callback writer under its old name
# from here; drop this line once they import ``write_atomic`` from ``imsim.files``.

if TYPE_CHECKING:
    import torch

ONNX_SCHEMA = "imsim.onnx/1"
ONNX_PRECISIONS = ("fp32", "fp16", "int8")


def onnx_path(onnx_dir: str | Path, method: str, precision: str) -> Path:
    """``DIR/M.onnx`` for fp32, ``DIR/M.fp16.onnx`` for fp16, ``DIR/M.int8.onnx`` for int8 (QDQ)."""
    if precision not in ONNX_PRECISIONS:
        raise UserError(f"ONNX exports exist in {', '.join(ONNX_PRECISIONS)}, not {precision!r}")
    suffix = ".onnx" if precision == "fp32" else f".{precision}.onnx"
    return Path(onnx_dir) / f"{method}{suffix}"


def sidecar_path(path: str | Path) -> Path:
    """The JSON beside an artifact: ``X.onnx`` -> ``X.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def module_sha256(module: torch.nn.Module) -> str:
    """Hash of a module's weights and buffers (names, dtypes, shapes and bytes), in name order.

    Identifies the weights whatever file or tag they came from, so an exported graph can be
    matched to the method instance it is asked to stand in for.
    """
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    """Parse a JSON object, with a one-line error naming the file and what to do."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found; {fix}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{what} {path} is unreadable ({e}); {fix}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{what} {path} is not a JSON object; {fix}")
    return doc


def export_command(method: str, onnx_dir: str | Path) -> str:
    return f"python -m export --method {method} --out {onnx_dir}"


def load_onnx_sidecar(path: str | Path, method: str | None = None) -> dict[str, Any]:
    """The sidecar of an exported ONNX file, after checking that the file is the one it describes.

    Refuses a missing file or sidecar, a file changed since export, and (when ``method`` is
    given) a file exported for another method.
    """
    path = Path(path)
    name = method or path.name.split(".")[0]
    fix = f"re-export it: {export_command(name, path.parent)}"
    if not path.is_file():
        raise UserError(
            f"ONNX file {path} not found; export it: {export_command(name, path.parent)}"
        )
    side = read_json(sidecar_path(path), "ONNX sidecar", fix)
    if side.get("schema") != ONNX_SCHEMA:
        raise UserError(f"{sidecar_path(path)} is not an {ONNX_SCHEMA} sidecar; {fix}")
    if method is not None and side.get("method") != method:
        raise UserError(f"{path} was exported for method {side.get('method')!r}, not {method!r}")
    if sha256_file(path) != side.get("onnx_sha256"):
        raise UserError(f"{path} changed since it was exported (sha256 differs); {fix}")
    return side


def check_weights(side: dict[str, Any], module: torch.nn.Module, path: str | Path) -> None:
    """Refuse an ONNX file exported from other weights than ``module``'s."""
    have = module_sha256(module)
    if side.get("weights_sha256") != have:
        raise UserError(
            f"{path} was exported from other weights (sha256 {str(side.get('weights_sha256'))[:12]}"
            f") than this {side.get('method')} model ({have[:12]}); re-export it: "
            f"{export_command(str(side.get('method')), Path(path).parent)} with the same "
            "--checkpoint / --pretrained"
        )
