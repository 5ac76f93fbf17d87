"""The one interface every similarity method implements, and the scorers protocols rank with.

An ``Embedder`` maps uint8 RGB images (N, H, W, 3) to float32 features (N, D); its ``MethodSpec``
declares what it needs and how support images are aggregated into a class score. Its ``scorer``
turns the features of one evaluation pool into a :class:`imsim.scoring.Scorer` (cosine, or a
pairwise score of its own), so protocols never care which.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
from tqdm import tqdm

from imsim.data.types import Split
from imsim.errors import UserError
from imsim.scoring import Aggregation, CosineScorer, Scorer
from imsim.scoring import l2_normalize as l2_normalize  # re-exported: it lived here

if TYPE_CHECKING:
    import torch

    from imsim.backends.base import Backend


@dataclass(frozen=True)
class MethodSpec:
    """What a method declares about itself (recorded with every result)."""

    name: str
    embedding_dim: int
    input_size: int | None = None  # side the method resizes inputs to; None: native size
    normalization: str = "none"
    # True when the method scores pairs of images itself (``imsim.scoring.PairwiseScorer``):
    # its features are no vectors to compare by cosine, so search cannot index them.
    pairwise: bool = False
    # How support images make a class score (see ``imsim.scoring.Aggregation``): "mean",
    # "prototype" (vector methods only) or "images" (method 4 under the seed protocol).
    support_aggregation: Aggregation = "mean"
    # True when the method tunes something (fusion weights, a threshold...) on seen classes before
    # evaluation: the caller then passes the seen-class train images to ``Embedder.fit``.
    fits_on_seen: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class Embedder(ABC):
    """A similarity method: images in, one feature vector per image out."""

    spec: MethodSpec
    batch_size: int = 256
    # Declared capability: ``embed_text`` maps text into the image embedding space (CLIP).
    text_encoder: ClassVar[bool] = False

    @property
    def method_id(self) -> str:
        """This instance's identity in results and search manifests: the name for a method
        without weights of its own, ``name.TAG`` for a checkpoint (``triplet.cifar10-r20``)."""
        return self.spec.name

    def weights_sha256(self) -> str | None:
        """SHA-256 of the weights behind this instance, None when it has none of its own; it
        tells apart two instances whose ids agree (``registry.distinct_ids``)."""
        return None

    @abstractmethod
    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> float32 (N, D), L2-normalized unless the scorer says else."""

    def fit(self, seen: Split, class_names: list[str]) -> None:
        """Tune the method on seen-class training images only (when ``spec.fits_on_seen``)."""
        del seen, class_names

    def scorer(self, feats: np.ndarray, class_names: list[str]) -> Scorer:
        """The scorer for a pool of this method's features (``class_names``: the dataset's)."""
        del class_names  # image-only methods ignore class names
        return CosineScorer(feats, self.spec.support_aggregation)

    def trained_classes(self) -> set[str]:
        """Names of the classes this method's weights were trained or selected on.

        Evaluation refuses to treat any of them as unseen: that would be test leakage.
        """
        return set()

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Text -> float32 (N, D) in the image embedding space (when ``text_encoder``)."""
        raise UserError(f"method {self.spec.name!r} has no text encoder; use a CLIP method")

    def use_backend(self, backend: Backend) -> None:
        """Run this method's network on ``backend`` from now on (``--backend``); a one-line error
        for methods that are not a single network."""
        raise UserError(
            f"method {self.spec.name!r} is not a single network, so the {backend.name} backend "
            "cannot run it; use its own embedding (no --backend)"
        )

    def as_module(self) -> torch.nn.Module | None:
        """The whole method as one torch module, for export and inference backends.

        Its forward takes uint8 (N, H, W, 3) and returns float32 L2-normalized (N, D), with all
        preprocessing (resize, normalization) inside, so the exported graph needs nothing else.
        None for methods that are not a single network.
        """
        return None

    def describe(self) -> dict:
        """Provenance of this method instance, recorded in results (weights, config, ...)."""
        return {"spec": self.spec.to_dict()}


def reference_runner(module: torch.nn.Module, device: str = "cpu") -> Backend:
    """The reference runner of a network: ``TorchBackend`` in strict fp32, eager, contiguous
    (NCHW) weights. Every method's own embedding runs on it, ``bench.parity`` and export judge
    every other backend against it."""
    from imsim.backends.torch_backend import TorchBackend

    return TorchBackend(module, "fp32", device, channels_last=False, compile=False)


class NetworkEmbedder(Embedder):
    """A method that is one torch network (``module``, the ``as_module`` contract), run by a
    runner: an inference backend.

    The runner defaults to ``reference_runner`` on ``device``, created on first use;
    ``use_backend`` swaps it (``--backend``), so accuracy, parity, export checks, fps and search
    all run a network through the one ``Backend.embed`` path.
    """

    module: torch.nn.Module
    device: str = "cpu"
    _runner: Backend | None = None

    def runner_module(self) -> torch.nn.Module:
        """The module the default runner runs: ``module`` (CLIP's seed recipe: raw features)."""
        return self.module

    @property
    def runner(self) -> Backend:
        """What runs the network: the backend given to ``use_backend``, else the reference."""
        if self._runner is None:
            self._runner = reference_runner(self.runner_module(), self.device)
        return self._runner

    def use_backend(self, backend: Backend) -> None:
        self._runner = backend

    def embed(self, images: np.ndarray) -> np.ndarray:
        if len(check_images(images)) == 0:
            return np.zeros((0, self.spec.embedding_dim), dtype=np.float32)
        return self.runner.embed(images)

    def as_module(self) -> torch.nn.Module:
        return self.module


def check_images(images: np.ndarray) -> np.ndarray:
    """Validate the embedder input contract; returns the array unchanged."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise UserError(
            f"images must be a uint8 numpy array, got {type(images).__name__}"
            f" {getattr(images, 'dtype', '')}"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"images must have shape (N, H, W, 3), got {images.shape}")
    return images


class Embeds(Protocol):
    """Anything with the embedder contract's ``embed``: a method or a backend (runner)."""

    def embed(self, images: np.ndarray) -> np.ndarray: ...


def embed_all(
    embedder: Embeds, images: np.ndarray, desc: str = "embed", batch_size: int | None = None
) -> np.ndarray:
    """Embed a whole array in batches with a progress bar, with a method or a runner."""
    check_images(images)
    bs = batch_size or getattr(embedder, "batch_size", Embedder.batch_size)
    out = []
    for i in tqdm(range(0, len(images), bs), desc=desc, unit="batch", leave=False, mininterval=1):
        out.append(np.asarray(embedder.embed(images[i : i + bs]), dtype=np.float32))
    if not out:
        spec = getattr(embedder, "spec", None)
        return np.zeros((0, spec.embedding_dim if spec else 0), dtype=np.float32)
    return np.concatenate(out)
