"""The one backend interface and the options every backend is created from.

A backend is a network method's runner (``imsim.methods.base.NetworkEmbedder``): the reference,
``TorchBackend`` in strict fp32, by default, any other with ``--backend``. It runs one method's
network with the embedder's contract: uint8 RGB (N, H, W, 3) in, float32 L2-normalized (N, D)
out. Only how the network runs differs (PyTorch eager or compiled,
ONNX Runtime, a TensorRT engine), never what it computes, which ``bench.parity`` checks.

``embed`` is three steps every backend implements: ``prepare`` (host images -> the backend's
input, on its device), ``run_prepared`` (the network, output left on the device) and ``fetch``
(output -> host float32). ``bench.fps`` times ``embed`` end to end and ``run_prepared`` alone on
inputs prepared once, so both modes run exactly the code ``embed`` runs.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from imsim.artifacts import check_weights, load_onnx_sidecar
from imsim.errors import UserError
from imsim.hardware import precision_tags
from imsim.methods.base import Embedder, check_images


@dataclass(frozen=True)
class BackendOptions:
    """What any backend is asked for (the common flags of ``imsim.cli.add_backend_args``). A
    backend with settings of its own has a subclass with those fields (``Backend.options_type``:
    ``TorchOptions``, ``OnnxRuntimeOptions``); plain ``BackendOptions`` give them their defaults.
    """

    precision: str | None = None  # None: the backend's default_precision
    device: str = "cpu"
    threads: int | None = None  # CPU threads (torch: process-wide; onnxruntime, openvino: own)
    onnx_dir: str = "artifacts/onnx"  # where python -m export wrote
    engine_dir: str = "artifacts/engines"  # where python -m engines.build wrote

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_threads(threads: int | None) -> int | None:
    """A CPU thread count (None: the runtime's default), or a one-line error below 1."""
    if threads is not None and threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    return threads


def _one_of(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


class Backend(ABC):
    """Runs one method's network: ``embed(uint8 (N, H, W, 3)) -> float32 (N, D)``.

    A backend class also owns its command line (Polygraphy's per-backend argument groups): the
    precisions it runs and its default one, its own flags (``add_args``) and how they become its
    options (``options_from_args``). The flags every backend shares are ``imsim.cli``'s.
    """

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    default_precision: ClassVar[str] = "fp32"  # what --precision means when not given
    options_type: ClassVar[type[BackendOptions]] = BackendOptions

    @classmethod
    def check_precision(cls, precision: str | None) -> str:
        """``precision`` (None: ``default_precision``) if this backend runs it, else a one-line
        error: the one precision check, made by the CLI's preflight, ``options_from_args``,
        ``checked_options`` and every constructor."""
        precision = precision or cls.default_precision
        if precision not in cls.precisions:
            raise UserError(
                f"backend {cls.name!r} runs {_one_of(cls.precisions)}, not {precision!r}"
            )
        return precision

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """Add this backend's own flags to ``parser``, as one argument group (none by default)."""
        return None

    @classmethod
    def own_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        """This backend's own ``options_type`` fields from the flags ``add_args`` added."""
        return {}

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> BackendOptions:
        """This backend's checked options from parsed flags: the common ones and its own."""
        options = cls.options_type(
            precision=args.precision,
            device=args.device,
            threads=getattr(args, "threads", None),
            onnx_dir=args.onnx_dir,
            engine_dir=args.engine_dir,
            **cls.own_options(args),
        )
        return cls.checked_options(options)

    @classmethod
    def checked_options(cls, options: BackendOptions) -> BackendOptions:
        """``options`` as this backend's ``options_type`` (plain ``BackendOptions`` get its own
        fields' defaults), with the precision resolved and checked and the threads checked.
        Another backend's options are a programming error."""
        if not isinstance(options, cls.options_type):
            if type(options) is not BackendOptions:
                raise TypeError(
                    f"backend {cls.name!r} takes {cls.options_type.__name__}, not "
                    f"{type(options).__name__}"
                )
            options = cls.options_type(**options.to_dict())
        check_threads(options.threads)
        return replace(options, precision=cls.check_precision(options.precision))

    def __init__(self, precision: str, device: str) -> None:
        self.precision = self.check_precision(precision)
        self.device = device
        # (H, W) the network was exported for; None accepts any size.
        self.input_size: tuple[int, int] | None = None

    @classmethod
    @abstractmethod
    def from_embedder(cls, embedder: Embedder, options: BackendOptions) -> Backend:
        """The backend for a method instance (its module, or the artifacts exported from it)."""

    @abstractmethod
    def prepare(self, images: np.ndarray) -> Any:
        """Validated uint8 (N, H, W, 3) host images -> the network's input, on the device."""

    @abstractmethod
    def run_prepared(self, x: Any) -> Any:
        """Run the network on a prepared input; the (N, D) output may stay on the device."""

    @abstractmethod
    def fetch(self, y: Any) -> np.ndarray:
        """An output of ``run_prepared`` -> float32 (N, D) numpy on the host."""

    def synchronize(self) -> None:
        """Wait for work queued on the device (no-op for synchronous backends)."""
        return None

    def embed(self, images: np.ndarray) -> np.ndarray:
        check_images(images)
        if self.input_size is not None and tuple(images.shape[1:3]) != self.input_size:
            h, w = self.input_size
            raise UserError(
                f"{self.name} backend was built for {h}x{w} images, got "
                f"{images.shape[1]}x{images.shape[2]}; re-export with --image-size or resize"
            )
        if len(images) == 0:
            raise UserError("no images to embed")
        y = self.run_prepared(self.prepare(np.ascontiguousarray(images)))
        out = np.asarray(self.fetch(y), dtype=np.float32)
        if out.ndim != 2 or len(out) != len(images):
            raise RuntimeError(f"{self.name} backend returned {out.shape} for {len(images)} images")
        return out

    def precision_tags(self) -> dict[str, Any]:
        """``precision_label`` (e.g. ``bf16 (emulated)``) and ``precision_native`` of this run,
        from what the device computes natively (``imsim.hardware``)."""
        return precision_tags(self.precision, self.device)

    def describe(self) -> dict[str, Any]:
        """What ran: backend, precision, device and the artifact or settings behind it."""
        return {
            "backend": self.name,
            "precision": self.precision,
            "device": self.device,
            **self.precision_tags(),
        }


def method_module(embedder: Embedder, backend: str):
    """The method's network, or a one-line error for methods that are not a single network."""
    module = embedder.as_module()
    if module is None:
        raise UserError(
            f"method {embedder.spec.name!r} is not a single network, so the {backend} backend "
            "cannot run it; use its own embedding (no --backend)"
        )
    return module


def checked_export(embedder: Embedder, backend: str, path: Path) -> dict:
    """The sidecar of an ONNX export, after checking it was exported from this method's weights."""
    module = method_module(embedder, backend)
    sidecar = load_onnx_sidecar(path, embedder.spec.name)
    check_weights(sidecar, module, path)
    return sidecar
