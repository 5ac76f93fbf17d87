"""The one interface every similarity method implements, and the scorers protocols rank with.

An ``Embedder`` maps uint8 RGB images (N, H, W, 3) to float32 features (N, D); its ``MethodSpec``
declares what it needs and how support images are aggregated into a class score. A ``Scorer``
turns the features of one evaluation pool into query-support and query-class similarities, so
protocols never care whether a method is a neural embedding compared by cosine or a classical
pipeline with its own pairwise score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from tqdm import tqdm

from imsim.data.types import Split
from imsim.errors import UserError

if TYPE_CHECKING:
    import torch

Aggregation = Literal["mean", "prototype", "images"]


@dataclass(frozen=True)
class MethodSpec:
    """What a method declares about itself (recorded with every result)."""

    name: str
    embedding_dim: int
    input_size: int | None = None  # side the method resizes inputs to; None: native size
    normalization: str = "none"
    distance: str = "cosine"
    # How support images make a class score: "mean" = mean similarity over the class's support
    # images (the study's methods 1-3), "prototype" = similarity to the normalized mean embedding
    # (methods 5-6), "images" = rank individual support images (method 4 under the seed protocol).
    support_aggregation: Aggregation = "mean"
    needs_training: bool = False
    # True when the method tunes something (fusion weights, a threshold...) on seen classes before
    # evaluation: the caller then passes the seen-class train images to ``Embedder.fit``.
    fits_on_seen: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class Scorer:
    """Cosine similarities over a pool of L2-normalized features, indexed by pool position.

    ``raw_prototypes``: ``feats`` are raw (unnormalized) embeddings; similarities use their unit
    vectors, and a class prototype is the normalized mean of the raw vectors (the reference
    study's CLIP rule, where a large-norm support image weighs more) rather than of unit ones.
    """

    def __init__(
        self, feats: np.ndarray, aggregation: Aggregation = "mean", raw_prototypes: bool = False
    ) -> None:
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        self.raw = feats if raw_prototypes else None
        self.feats = l2_normalize(feats) if raw_prototypes else feats
        self.aggregation = aggregation

    def pair_sim(self, q_idx: np.ndarray, s_idx: np.ndarray) -> np.ndarray:
        """(Q, S) similarity of each query to each support item; higher is more similar."""
        return self.feats[q_idx] @ self.feats[s_idx].T

    def class_sim(
        self, q_idx: np.ndarray, s_idx: np.ndarray, s_labels: np.ndarray, classes: np.ndarray
    ) -> np.ndarray:
        """(Q, C) similarity of each query to each class in ``classes``, from its support items."""
        onehot = (s_labels[:, None] == classes[None, :]).astype(np.float32)  # (S, C)
        counts = onehot.sum(0)
        if np.any(counts == 0):
            raise ValueError("every class needs at least one support item")
        if self.aggregation == "prototype":
            protos = onehot.T @ (self.feats if self.raw is None else self.raw)[s_idx]
            protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
            return self.feats[q_idx] @ protos.T
        sims = self.pair_sim(q_idx, s_idx)
        if self.aggregation == "images":
            # Nearest support image of each class.
            masked = np.where(onehot.T[None, :, :] > 0, sims[:, None, :], -np.inf)
            return masked.max(axis=2)
        return (sims @ onehot) / counts


class Embedder(ABC):
    """A similarity method: images in, one feature vector per image out."""

    spec: MethodSpec
    batch_size: int = 256

    @abstractmethod
    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> float32 (N, D), L2-normalized unless the scorer says else."""

    def fit(self, seen: Split, class_names: list[str]) -> None:
        """Tune the method on seen-class training images only (when ``spec.fits_on_seen``)."""
        del seen, class_names

    def scorer(self, feats: np.ndarray, class_names: list[str]) -> Scorer:
        """The scorer for a pool of this method's features (``class_names``: the dataset's)."""
        del class_names  # image-only methods ignore class names
        return Scorer(feats, self.spec.support_aggregation)

    def trained_classes(self) -> set[str]:
        """Names of the classes this method's weights were trained or selected on.

        Evaluation refuses to treat any of them as unseen: that would be test leakage.
        """
        return set()

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Text -> float32 (N, D) in the image embedding space, for methods with a text tower."""
        raise UserError(f"method {self.spec.name!r} has no text encoder; use a CLIP method")

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


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_all(
    embedder: Embedder, images: np.ndarray, desc: str = "embed", batch_size: int | None = None
) -> np.ndarray:
    """Embed a whole array in batches with a progress bar."""
    check_images(images)
    bs = batch_size or embedder.batch_size
    out = []
    for i in tqdm(range(0, len(images), bs), desc=desc, unit="batch", leave=False, mininterval=1):
        out.append(np.asarray(embedder.embed(images[i : i + bs]), dtype=np.float32))
    if not out:
        return np.zeros((0, embedder.spec.embedding_dim), dtype=np.float32)
    return np.concatenate(out)
