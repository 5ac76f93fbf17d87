"""TensorRT engine manifests: what an engine was built from and for, and the checks that refuse it.

A serialized TensorRT engine only runs on the TensorRT version and GPU it was built with, and it
silently keeps the weights of the ONNX it came from. ``engines.build`` writes
``M.<precision>.engine.json`` beside each engine (source ONNX and its sha256, engine sha256,
TensorRT version, GPU name and compute capability, precision, optimization profile); the runtime
checks it against the running TensorRT, the GPU and the current ONNX file and refuses with a
"rebuild" message on any mismatch. Pure Python, so every refusal is testable without TensorRT.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imsim.artifacts import read_json, sha256_file, sidecar_path
from imsim.errors import UserError

MANIFEST_SCHEMA = "imsim.engine/1"
ENGINE_PRECISIONS = ("fp16", "fp32", "int8")
REQUIRED = (
    "schema",
    "method",
    "precision",
    "engine_sha256",
    "onnx",
    "tensorrt_version",
    "gpu",
    "profile",
    "input",
    "embedding_size",
)
# The type of every field the checks and the runtime read; a nested dict is an object's fields.
FIELD_TYPES: dict[str, Any] = {
    "schema": str,
    "method": str,
    "precision": str,
    "engine_sha256": str,
    "onnx": {"file": str, "sha256": str},
    "tensorrt_version": str,
    "gpu": {"name": str, "compute_capability": str},
    "profile": {"min": int, "opt": int, "max": int},
    "input": {"name": str, "shape": list},
    "embedding_size": int,
}
_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def field_problem(
    doc: dict[str, Any], types: dict[str, Any] = FIELD_TYPES, at: str = ""
) -> str | None:
    """The first field of ``doc`` that is missing or of the wrong type, as words, or None.

    A hand-edited manifest must fail here with one line, not later with an AttributeError or a
    TypeError deep in the checks.
    """
    for key, want in types.items():
        name = f"{at}{key}"
        if key not in doc:
            return f"{name} is missing"
        value = doc[key]
        expected = dict if isinstance(want, dict) else want
        # bool is an int to Python, never to a manifest.
        if not isinstance(value, expected) or isinstance(value, bool):
            return f"{name} must be {_TYPE_NAMES[expected]}, not {json.dumps(value)[:40]}"
        if isinstance(want, dict):
            inner = field_problem(value, want, f"{name}.")
            if inner:
                return inner
    return None


@dataclass(frozen=True)
class Profile:
    """The batch sizes an engine accepts (min, opt, max); TensorRT tunes its kernels for opt."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        for k in ("min", "opt", "max"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(
                    f"optimization profile {k} batch must be an integer >= 1, got {v!r}"
                )
        if not self.min <= self.opt <= self.max:
            raise UserError(
                "optimization profile needs min <= opt <= max, got "
                f"{self.min}/{self.opt}/{self.max}"
            )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def engine_path(engine_dir: str | Path, method: str, precision: str) -> Path:
    """``DIR/M.<precision>.engine``; ``precision`` is one ``TensorRTBackend.check_precision``
    accepted (``ENGINE_PRECISIONS``)."""
    return Path(engine_dir) / f"{method}.{precision}.engine"


def manifest_path(engine: str | Path) -> Path:
    return sidecar_path(engine)


def rebuild_command(method: str, precision: str, engine: Path, onnx_dir: str | Path) -> str:
    return (
        f"python -m engines.build --methods {method} --precision {precision} "
        f"--onnx-dir {onnx_dir} --out {Path(engine).parent}"
    )


def make_manifest(
    *,
    method: str,
    precision: str,
    engine_sha256: str,
    onnx_file: Path,
    onnx_sha256: str,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    profile: Profile,
    input_name: str,
    input_shape: tuple[int, int, int],
    output_name: str,
    embedding_size: int,
    build: dict[str, Any],
) -> dict[str, Any]:
    """The manifest ``engines.build`` writes beside an engine."""
    return {
        "schema": MANIFEST_SCHEMA,
        "method": method,
        "precision": precision,
        "engine_sha256": engine_sha256,
        "onnx": {"file": Path(onnx_file).name, "sha256": onnx_sha256},
        "tensorrt_version": tensorrt_version,
        "gpu": {"name": gpu_name, "compute_capability": compute_capability},
        "profile": profile.to_dict(),
        "input": {"name": input_name, "dtype": "uint8", "shape": ["batch", *input_shape]},
        "output": {"name": output_name},
        "embedding_size": int(embedding_size),
        "build": build,
    }


def load_manifest(engine: str | Path, onnx_dir: str | Path) -> dict[str, Any]:
    engine = Path(engine)
    method = engine.name.split(".")[0]
    precision = engine.name.split(".")[1] if engine.name.count(".") >= 2 else "fp16"
    fix = f"rebuild it: {rebuild_command(method, precision, engine, onnx_dir)}"
    if not engine.is_file():
        raise UserError(
            f"TensorRT engine {engine} not found; build it: "
            f"{rebuild_command(method, precision, engine, onnx_dir)}"
        )
    doc = read_json(manifest_path(engine), "engine manifest", fix)
    missing = [k for k in REQUIRED if k not in doc]
    if doc.get("schema") != MANIFEST_SCHEMA or missing:
        raise UserError(
            f"{manifest_path(engine)} is not a valid engine manifest "
            f"(missing {missing or 'schema'}); {fix}"
        )
    problem = field_problem(doc)
    if problem is None and doc["precision"] not in ENGINE_PRECISIONS:
        problem = f"precision must be one of {', '.join(ENGINE_PRECISIONS)}"
    if problem is None:
        try:
            Profile(*(doc["profile"][k] for k in ("min", "opt", "max")))
        except UserError as e:
            problem = f"profile: {e}"
    if problem:
        raise UserError(
            f"{manifest_path(engine)} is not a valid engine manifest ({problem}); {fix}"
        )
    return doc


def check_manifest(
    manifest: dict[str, Any],
    *,
    engine: str | Path,
    onnx_dir: str | Path,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
) -> None:
    """Refuse an engine that is not the one its manifest describes, was built for another
    TensorRT or GPU, or whose source ONNX changed (or is gone) since it was built."""
    engine = Path(engine)
    method, precision = manifest["method"], manifest["precision"]
    fix = f"rebuild it: {rebuild_command(method, precision, engine, onnx_dir)}"
    if sha256_file(engine) != manifest["engine_sha256"]:
        raise UserError(
            f"{engine} is not the engine its manifest describes (sha256 differs); {fix}"
        )
    if manifest["tensorrt_version"] != tensorrt_version:
        raise UserError(
            f"{engine} was built with TensorRT {manifest['tensorrt_version']}, this is "
            f"TensorRT {tensorrt_version}; {fix}"
        )
    gpu = manifest["gpu"]
    if gpu.get("compute_capability") != compute_capability or gpu.get("name") != gpu_name:
        raise UserError(
            f"{engine} was built for {gpu.get('name')} (compute capability "
            f"{gpu.get('compute_capability')}), this GPU is {gpu_name} "
            f"({compute_capability}); {fix}"
        )
    src = Path(onnx_dir) / manifest["onnx"]["file"]
    if not src.is_file():
        raise UserError(
            f"{engine} was built from {src}, which is missing, so it cannot be checked against "
            f"the current model; pass --onnx-dir where it lives or re-export and {fix}"
        )
    if sha256_file(src) != manifest["onnx"]["sha256"]:
        raise UserError(f"{src} changed since {engine} was built from it; {fix}")
