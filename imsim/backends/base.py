"""The one backend interface, the options every backend is created from, and the adapter that
lets a backend stand in for a method's own ``embed``.

A backend runs one exported method with the embedder's contract: uint8 RGB (N, H, W, 3) in,
float32 L2-normalized (N, D) out. Only how the network runs differs (PyTorch eager or compiled,
ONNX Runtime, a TensorRT engine), never what it computes, which ``bench.parity`` checks.

``embed`` is three steps every backend implements: ``prepare`` (host images -> the backend's
input, on its device), ``run_prepared`` (the network, output left on the device) and ``fetch``
(output -> host float32). ``bench.fps`` times ``embed`` end to end and ``run_prepared`` alone on
inputs prepared once, so both modes run exactly the code ``embed`` runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from imsim.artifacts import check_weights, load_onnx_sidecar
from imsim.data.types import Split
from imsim.errors import UserError
from imsim.hardware import precision_tags
from imsim.methods.base import Embedder, Scorer, check_images


@dataclass(frozen=True)
class BackendOptions:
    """What a backend is asked for; each backend reads the fields that concern it."""

    precision: str = "fp32"
    device: str = "cpu"
    onnx_dir: str = "artifacts/onnx"
    engine_dir: str = "artifacts/engines"
    channels_last: bool = True  # torch
    compile: bool = False  # torch: torch.compile
    ort_provider: str | None = None  # onnxruntime: cpu | cuda | tensorrt (default from device)
    ort_opt_level: str | None = None  # onnxruntime: disable | basic | extended | all
    threads: int | None = None  # CPU threads (torch: process-wide; onnxruntime: intra-op)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(ABC):
    """Runs one method's network: ``embed(uint8 (N, H, W, 3)) -> float32 (N, D)``."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    default_precision: ClassVar[str] = "fp32"  # what --precision means when not given

    def __init__(self, precision: str, device: str) -> None:
        if precision not in self.precisions:
            raise UserError(
                f"backend {self.name!r} runs {', '.join(self.precisions)}, not {precision!r}"
            )
        self.precision = precision
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


class BackendEmbedder(Embedder):
    """A method whose image embedding runs on a backend; everything else is the method's own."""

    def __init__(self, method: Embedder, backend: Backend) -> None:
        self.method = method
        self.backend = backend
        self.spec = method.spec
        self.batch_size = method.batch_size

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.backend.embed(images)

    def fit(self, seen: Split, class_names: list[str]) -> None:
        self.method.fit(seen, class_names)

    def scorer(self, feats: np.ndarray, class_names: list[str]) -> Scorer:
        return self.method.scorer(feats, class_names)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.method.embed_text(texts)

    def trained_classes(self) -> set[str]:
        return self.method.trained_classes()

    def as_module(self):
        return self.method.as_module()

    def describe(self) -> dict:
        return {**self.method.describe(), "backend": self.backend.describe()}


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


def require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise UserError(f"{what} {path} not found; {fix}")
    return path
