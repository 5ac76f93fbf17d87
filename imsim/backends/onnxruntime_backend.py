"""``onnxruntime``: an exported ONNX file (``M.onnx``, ``M.fp16.onnx`` or the QDQ ``M.int8.onnx``)
on ONNX Runtime.

Providers: the CPU provider by default, CUDA or TensorRT where onnxruntime-gpu is installed. The
file's sidecar is checked first: the file must be unchanged since export and exported from the
very weights of the method it stands in for.

Graph optimization level: FP16 graphs on the CPU provider use ``ORT_ENABLE_EXTENDED``, because
onnxruntime 1.32 segfaults while creating a session for an FP16 ViT graph at ``ORT_ENABLE_ALL``
(a crash no error handling can catch); everything else uses ``ORT_ENABLE_ALL``, which for a QDQ
graph fuses each DequantizeLinear -> Conv/MatMul -> QuantizeLinear group into an integer kernel
(QLinearConv, MatMulInteger...) where ONNX Runtime has one, and runs the rest in float.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from imsim.artifacts import load_onnx_sidecar, onnx_path
from imsim.backends.base import Backend, BackendOptions, check_threads, checked_export
from imsim.errors import UserError
from imsim.methods.base import Embedder

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
OPT_LEVELS = ("disable", "basic", "extended", "all")


def default_opt_level(precision: str, provider: str) -> str:
    """``extended`` for FP16 graphs on the CPU provider (see the module docstring), else ``all``."""
    return "extended" if precision == "fp16" and provider == "cpu" else "all"


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise UserError(
            "onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu)"
        ) from None
    return onnxruntime


def create_session(
    path: str | Path,
    provider: str = "cpu",
    opt_level: str | None = None,
    precision: str = "fp32",
    cache_dir: str | Path = "artifacts/engines/ort-trt",
    threads: int | None = None,
):
    """An ONNX Runtime session on ``provider`` (with CPU fallback) at a deliberate optimization
    level (``default_opt_level`` unless given), with ``threads`` intra-op threads (default: ONNX
    Runtime's, one per physical core)."""
    ort = _import_ort()
    if provider not in PROVIDERS:
        raise UserError(f"unknown ONNX Runtime provider {provider!r}; use {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[provider]
    if wanted not in ort.get_available_providers():
        raise UserError(
            f"ONNX Runtime has no {wanted} here (available: "
            f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu "
            "(pip install 'imsim[gpu]') on a machine with an NVIDIA GPU, or use the cpu provider"
        )
    level = opt_level or default_opt_level(precision, provider)
    if level not in OPT_LEVELS:
        raise UserError(f"unknown graph optimization level {level!r}; use {', '.join(OPT_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if check_threads(threads) is not None:
        so.intra_op_num_threads = threads
    providers: list[Any] = []
    if provider == "tensorrt":
        providers.append(
            (
                wanted,
                {
                    "trt_fp16_enable": precision == "fp16",
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache_dir),
                    "trt_timing_cache_enable": True,
                },
            )
        )
    if provider in ("tensorrt", "cuda"):
        providers.append(PROVIDERS["cuda"])
    providers.append(PROVIDERS["cpu"])
    return ort.InferenceSession(str(path), so, providers=providers)


@dataclass(frozen=True)
class OnnxRuntimeOptions(BackendOptions):
    """The onnxruntime backend's options: the common ones, execution provider and graph
    optimization level (None: from the device, ``default_opt_level``)."""

    ort_provider: str | None = None  # cpu | cuda | tensorrt
    ort_opt_level: str | None = None  # disable | basic | extended | all


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    precisions = ("fp32", "fp16", "int8")
    options_type = OnnxRuntimeOptions

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("onnxruntime backend")
        g.add_argument(
            "--ort-provider",
            default=None,
            choices=tuple(PROVIDERS),
            help="onnxruntime execution provider (default: cpu, or cuda with --device cuda)",
        )
        g.add_argument(
            "--ort-opt-level",
            default=None,
            choices=OPT_LEVELS,
            help="onnxruntime graph optimization (default: extended for fp16 on cpu, else all)",
        )

    @classmethod
    def own_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"ort_provider": args.ort_provider, "ort_opt_level": args.ort_opt_level}

    def __init__(
        self,
        path: str | Path,
        precision: str = "fp32",
        device: str = "cpu",
        provider: str | None = None,
        opt_level: str | None = None,
        cache_dir: str | Path = "artifacts/engines/ort-trt",
        sidecar: dict[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(precision, device)
        self.path = Path(path)
        self.sidecar = sidecar if sidecar is not None else load_onnx_sidecar(self.path)
        if self.sidecar.get("precision") != precision:
            raise UserError(
                f"{self.path} holds a {self.sidecar.get('precision')} graph, not {precision}"
            )
        self.provider = provider or ("cpu" if device == "cpu" else "cuda")
        self.opt_level = opt_level or default_opt_level(precision, self.provider)
        self.session = create_session(
            self.path, self.provider, self.opt_level, precision, cache_dir, threads
        )
        self.threads = threads
        # Where inputs and outputs live: host memory for the CPU provider, else the GPU.
        self.ort_device = "cpu" if self.provider == "cpu" else "cuda"
        self.device_id = int(device.partition(":")[2] or 0) if self.ort_device == "cuda" else 0
        (inp,) = self.session.get_inputs()
        if inp.type != "tensor(uint8)":
            raise UserError(f"{self.path} takes {inp.type}, not uint8 images; re-export it")
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        h, w = self.sidecar["input_size"]
        self.input_size = (int(h), int(w))

    @classmethod
    def from_embedder(cls, embedder: Embedder, options: BackendOptions) -> OnnxRuntimeBackend:
        own = cast(OnnxRuntimeOptions, cls.checked_options(options))
        path = onnx_path(own.onnx_dir, embedder.spec.name, own.precision)
        sidecar = checked_export(embedder, cls.name, path)
        return cls(
            path,
            precision=own.precision,
            device=own.device,
            provider=own.ort_provider,
            opt_level=own.ort_opt_level,
            cache_dir=Path(own.engine_dir) / "ort-trt",
            sidecar=sidecar,
            threads=own.threads,
        )

    def prepare(self, images: np.ndarray) -> Any:
        ort = _import_ort()
        return ort.OrtValue.ortvalue_from_numpy(images, self.ort_device, self.device_id)

    def run_prepared(self, x: Any) -> Any:
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, x)
        binding.bind_output(self.output_name, self.ort_device, self.device_id)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def fetch(self, y: Any) -> np.ndarray:
        return y.numpy()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            onnx=str(self.path),
            onnx_sha256=self.sidecar.get("onnx_sha256"),
            provider=self.session.get_providers()[0],
            graph_optimization=self.opt_level,
        )
        if self.threads is not None:
            d["threads"] = self.threads
        return d
