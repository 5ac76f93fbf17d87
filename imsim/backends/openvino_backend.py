"""``openvino``: the exported FP32 ONNX file (``M.onnx``) compiled by OpenVINO for the CPU.

OpenVINO compiles the graph for this CPU's instruction set and runs it on its own thread pool.
``fp32`` asks for fp32 inference (``INFERENCE_PRECISION_HINT=f32``); ``bf16`` compiles the same
FP32 graph with ``INFERENCE_PRECISION_HINT=bf16``, which runs matrix multiplies and convolutions
in bf16 (AVX512-BF16 or AMX) and keeps precision-sensitive layers as OpenVINO decides; the output
is renormalized in fp32 here, as the other backends do. ``PERFORMANCE_HINT=LATENCY``: one stream
on all cores, the right setting for one synchronous request at a time. The ONNX file's sidecar is
checked first, as for ``onnxruntime``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from imsim.artifacts import load_onnx_sidecar, onnx_path
from imsim.backends.base import Backend, BackendOptions, checked_export
from imsim.errors import UserError
from imsim.methods.base import Embedder

HINTS = {"fp32": "f32", "bf16": "bf16"}


def require_openvino() -> ModuleType:
    try:
        import openvino
    except ImportError:
        raise UserError("OpenVINO is not installed; pip install openvino") from None
    return openvino


class OpenVinoBackend(Backend):
    name = "openvino"
    precisions = ("fp32", "bf16")

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
        if self.sidecar.get("precision") != "fp32":
            raise UserError(f"{self.path} is not the FP32 export OpenVINO compiles; use M.onnx")
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads is not None:
            if threads < 1:
                raise UserError(f"threads must be >= 1, got {threads}")
            config["INFERENCE_NUM_THREADS"] = threads
        self.version = ov.__version__
        self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        chosen = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = str(chosen)
        # What OpenVINO chose to run: "f32", "bf16", "f16".
        self.inference_type = chosen.get_type_name() if hasattr(chosen, "get_type_name") else None
        h, w = self.sidecar["input_size"]
        self.input_size = (int(h), int(w))

    @classmethod
    def from_embedder(cls, embedder: Embedder, options: BackendOptions) -> OpenVinoBackend:
        if options.precision not in cls.precisions:
            raise UserError(f"backend 'openvino' runs fp32 or bf16, not {options.precision!r}")
        path = onnx_path(options.onnx_dir, embedder.spec.name, "fp32")
        sidecar = checked_export(embedder, cls.name, path)
        return cls(path, options.precision, options.device, options.threads, sidecar)

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
        # which precision it chose): the label says what ran.
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
            threads=self.threads,
        )
        return d
