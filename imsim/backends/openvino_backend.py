"""``openvino``: an exported ONNX file compiled by OpenVINO for the CPU (``M.onnx``; ``M.int8.onnx``
for int8).

OpenVINO compiles the graph for this CPU's instruction set and runs it on its own thread pool.
``fp32`` asks for fp32 inference (``INFERENCE_PRECISION_HINT=f32``); ``bf16`` compiles the same
FP32 graph with ``INFERENCE_PRECISION_HINT=bf16``, which runs matrix multiplies and convolutions
in bf16 (AVX512-BF16 or AMX) and keeps precision-sensitive layers as OpenVINO decides; the output
is renormalized in fp32 here, as the other backends do. ``int8`` compiles the QDQ graph
(``M.int8.onnx``, the one ONNX Runtime verified and TensorRT builds): OpenVINO turns each
QuantizeLinear/DequantizeLinear pair into a FakeQuantize and runs the convolutions and matrix
multiplies behind them in u8/i8 (oneDNN: VNNI where the CPU has it, AVX2's 8-bit multiply-add
otherwise), the rest in f32 (``INFERENCE_PRECISION_HINT=f32``, so a bf16-capable CPU does not
move the float parts to bf16 either). OpenVINO decides per layer, so the backend counts what its
compiled model says each matrix layer ran in (``matrix_layers``: e.g. ``{"int8": 19, "fp32": 1}``)
and labels a run where none ran in 8 bits ``int8 (ran as fp32)``. On an x86 CPU without VNNI,
oneDNN's u8 x s8 multiply-add (AVX2 ``vpmaddubsw``) adds pairs of products in 16 bits with
saturation, which 8-bit weights can overflow (``export.int8``): the backend then warns once and
points to ``export --weight-bits 7``. ``PERFORMANCE_HINT=LATENCY``: one stream on all cores, the
right setting for one synchronous request at a time. The ONNX file's sidecar is checked first, as
for ``onnxruntime``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from imsim.artifacts import load_onnx_sidecar, onnx_path
from imsim.backends.base import Backend, BackendOptions, check_threads, checked_export
from imsim.errors import UserError
from imsim.hardware import capabilities
from imsim.methods.base import Embedder

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
# Layer types of OpenVINO's CPU runtime model that do the matrix work, and precision names.
MATRIX_LAYERS = ("Convolution", "FullyConnected", "MatMul", "Deconvolution")
RUNTIME_PRECISIONS = {"u8": "int8", "i8": "int8", "f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def matrix_layer_precisions(compiled: Any) -> dict[str, int]:
    """How many matrix layers (``MATRIX_LAYERS``) of a compiled model run in each precision, from
    the ``layerType`` and ``runtimePrecision`` its runtime model reports."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info or "runtimePrecision" not in info:
            continue
        if info["layerType"].astype(str) not in MATRIX_LAYERS:
            continue
        ran = info["runtimePrecision"].astype(str).lower()
        key = RUNTIME_PRECISIONS.get(ran, ran)
        counts[key] = counts.get(key, 0) + 1
    return counts


def require_openvino() -> ModuleType:
    try:
        import openvino
    except ImportError:
        raise UserError("OpenVINO is not installed; pip install openvino") from None
    return openvino


def warn_saturation(path: Path, weight_bits: int) -> bool:
    """One warning line when 8-bit weights meet a CPU without VNNI (see the module doc); True
    when it warned."""
    if weight_bits != 8 or capabilities("cpu").vnni:
        return False
    print(
        f"warning: {path.name} has 8-bit INT8 weights and this CPU has no VNNI: OpenVINO's "
        "16-bit saturating multiply-add (AVX2) can overflow and lose accuracy; for OpenVINO here, "
        "re-export with python -m export --precision int8 --weight-bits 7",
        file=sys.stderr,
    )
    return True


class OpenVinoBackend(Backend):
    name = "openvino"
    precisions = ("fp32", "bf16", "int8")

    def __init__(
        self,
        path: str | Path,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        sidecar: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(precision, device)
        ov = require_openvino()
        if device != "cpu":
            raise UserError(f"the openvino backend runs on the CPU here, not {device!r}")
        self.path = Path(path)
        self.sidecar = sidecar if sidecar is not None else load_onnx_sidecar(self.path)
        wanted = "int8" if precision == "int8" else "fp32"
        if self.sidecar.get("precision") != wanted:
            name = "M.int8.onnx" if wanted == "int8" else "M.onnx"
            raise UserError(
                f"{self.path} is not the {wanted.upper()} export OpenVINO compiles; use {name}"
            )
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if check_threads(threads) is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        self.version = ov.__version__
        self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        chosen = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = str(chosen)
        # What OpenVINO chose to run: "f32", "bf16", "f16".
        self.inference_type = chosen.get_type_name() if hasattr(chosen, "get_type_name") else None
        self.matrix_layers = matrix_layer_precisions(self.compiled)
        self.weight_bits = None
        if precision == "int8":
            self.weight_bits = int(
                self.sidecar.get("int8", {}).get("quantizer", {}).get("weight_bits", 8)
            )
            warn_saturation(self.path, self.weight_bits)
        h, w = self.sidecar["input_size"]
        self.input_size = (int(h), int(w))

    @classmethod
    def from_embedder(cls, embedder: Embedder, options: BackendOptions) -> OpenVinoBackend:
        own = cls.checked_options(options)
        source = "int8" if own.precision == "int8" else "fp32"
        path = onnx_path(own.onnx_dir, embedder.spec.name, source)
        sidecar = checked_export(embedder, cls.name, path)
        return cls(path, own.precision, own.device, own.threads, sidecar)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return images  # host memory is the device's

    def run_prepared(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        # A copy: the request reuses its output buffer on the next call.
        y = np.array(self.request.get_output_tensor(0).data, dtype=np.float32)
        if self.precision != "fp32":
            y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return y

    def fetch(self, y: np.ndarray) -> np.ndarray:
        return y

    def precision_tags(self) -> dict[str, Any]:
        # OpenVINO quietly runs a bf16 hint in f32 on CPUs without bf16 (its compiled model says
        # which precision it chose), and INT8 layers in f32 where it finds them unprofitable: the
        # label says what ran.
        if self.precision == "int8":
            if not self.matrix_layers.get("int8"):
                return {"precision_label": "int8 (ran as fp32)", "precision_native": False}
            return super().precision_tags()
        ran = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(self.inference_type or "")
        if ran is not None and ran != self.precision:
            label = f"{self.precision} (ran as {ran})"
            return {"precision_label": label, "precision_native": False}
        return super().precision_tags()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            onnx=str(self.path),
            onnx_sha256=self.sidecar.get("onnx_sha256"),
            openvino_version=self.version,
            inference_precision=self.inference_precision,
            matrix_layers=self.matrix_layers,
            threads=self.threads,
            **({"int8_weight_bits": self.weight_bits} if self.weight_bits else {}),
        )
        return d
