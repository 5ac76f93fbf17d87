"""Inference backends behind one interface: ``torch``, ``onnxruntime``, ``trt`` (TensorRT) and
``openvino``.

A new backend is one module with a ``Backend`` subclass plus one line in ``BACKENDS``. The class
owns its precisions, its default precision, its own flags and options (``Backend.add_args``,
``options_from_args``); a setup's identity (key, label, file name) is ``imsim.backends.setup``.
Runtimes (onnxruntime, OpenVINO, TensorRT) are imported only when a backend is created, so a
missing one costs nothing until then.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator

from imsim.backends.base import Backend, BackendOptions
from imsim.errors import UserError
from imsim.hardware import emulated_warning
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


def backend_classes() -> Iterator[type[Backend]]:
    """Every backend class, in ``BACKENDS`` order."""
    return (backend_class(name) for name in BACKENDS)


def create_backend(name: str, embedder: Embedder, options: BackendOptions) -> Backend:
    """The named backend running ``embedder``'s network with ``options``; one warning line when
    it does not run the precision asked for natively here (it still runs)."""
    backend = backend_class(name).from_embedder(embedder, options)
    tags = backend.precision_tags()
    if not tags["precision_native"]:
        what = f"backend {name!r}"
        label = tags["precision_label"]
        print(emulated_warning(what, backend.precision, backend.device, label), file=sys.stderr)
    return backend


def options_from_args(args: argparse.Namespace) -> BackendOptions:
    """``--backend``'s own, checked options from the flags of ``imsim.cli.add_backend_args``."""
    return backend_class(args.backend).options_from_args(args)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOptions",
    "backend_class",
    "backend_classes",
    "create_backend",
    "list_backends",
    "options_from_args",
]
