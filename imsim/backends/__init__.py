"""Inference backends behind one interface: ``torch``, ``onnxruntime``, ``trt`` (TensorRT) and
``openvino``.

A new backend is one module with a ``Backend`` subclass plus one line in ``BACKENDS``; modules
are imported only when their backend is asked for, so a missing runtime costs nothing until then.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from imsim.backends.base import Backend, BackendEmbedder, BackendOptions
from imsim.errors import UserError
from imsim.methods.base import Embedder

# name -> "module:Class"
BACKENDS: dict[str, str] = {
    "torch": "imsim.backends.torch_backend:TorchBackend",
    "onnxruntime": "imsim.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "trt": "imsim.backends.tensorrt_backend:TensorRTBackend",
    "openvino": "imsim.backends.openvino_backend:OpenVinoBackend",
}


def list_backends() -> list[str]:
    return list(BACKENDS)


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def create_backend(name: str, embedder: Embedder, options: BackendOptions) -> Backend:
    """The named backend running ``embedder``'s network with ``options``; one warning line when
    the device only emulates the precision asked for (it still runs)."""
    backend = backend_class(name).from_embedder(embedder, options)
    tags = backend.precision_tags()
    if not tags["precision_native"]:
        print(
            f"warning: backend {name!r} runs {tags['precision_label']} here: this device has no "
            f"native {backend.precision}; expect it to be slow, and compare it only with other "
            "emulated runs",
            file=sys.stderr,
        )
    return backend


def options_from_args(args: argparse.Namespace) -> BackendOptions:
    """``BackendOptions`` from the flags of ``imsim.cli.add_backend_args`` (and ``--device``)."""
    precision = args.precision or backend_class(args.backend).default_precision
    return BackendOptions(
        precision=precision,
        device=args.device,
        onnx_dir=args.onnx_dir,
        engine_dir=args.engine_dir,
        channels_last=not args.no_channels_last,
        compile=args.compile,
        ort_provider=args.ort_provider,
        ort_opt_level=args.ort_opt_level,
        threads=getattr(args, "threads", None),
    )


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendEmbedder",
    "BackendOptions",
    "backend_class",
    "create_backend",
    "list_backends",
    "options_from_args",
]
