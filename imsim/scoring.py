"""Pairwise scorers: what every evaluation protocol ranks with.

A :class:`Scorer` holds one evaluation pool and answers two questions about positions in it:
how similar each query is to each candidate (``pair_sim``), and how similar each query is to
each class given that class's support items (``class_sim``). Protocols only ever ask these two,
so they never care how a method compares images (the role of pytorch-metric-learning's
distances):

* :class:`CosineScorer`: a vector per image, compared by cosine (every embedding method);
* :class:`PairwiseScorer`: a method that scores pairs of images itself and has no vector to
  compare or index (the classical pipeline, :class:`imsim.methods.classical.ClassicalScorer`,
  or a precomputed matrix, :class:`MatrixScorer`); its class score aggregates pair scores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, get_args

import numpy as np

# How support images make a class score: "mean" = mean similarity over the class's support
# images (the study's methods 1-3), "prototype" = similarity to the normalized mean embedding
# (methods 5-6), "images" = rank individual support images (method 4 under the seed protocol).
Aggregation = Literal["mean", "prototype", "images"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


class Scorer(ABC):
    """Similarities between items of one pool, indexed by pool position; higher = more similar.

    ``aggregation`` says how ``class_sim`` turns support items into a class score; the seed
    protocol also reads it (``"images"`` ranks the support images themselves).
    """

    aggregation: Aggregation

    @abstractmethod
    def pair_sim(self, q_idx: np.ndarray, s_idx: np.ndarray) -> np.ndarray:
        """(Q, S) similarity of each query to each support item."""

    @abstractmethod
    def class_sim(
        self, q_idx: np.ndarray, s_idx: np.ndarray, s_labels: np.ndarray, classes: np.ndarray
    ) -> np.ndarray:
        """(Q, C) similarity of each query to each class in ``classes``, from its support items."""


def class_onehot(s_labels: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, C) float32 membership of each support item in each class, and the per-class counts."""
    onehot = (np.asarray(s_labels)[:, None] == np.asarray(classes)[None, :]).astype(np.float32)
    counts = onehot.sum(0)
    if np.any(counts == 0):
        raise ValueError("every class needs at least one support item")
    return onehot, counts


def aggregate_pairs(
    sims: np.ndarray, onehot: np.ndarray, counts: np.ndarray, aggregation: Aggregation
) -> np.ndarray:
    """(Q, S) pair similarities -> (Q, C) class scores: the mean, or the nearest support item."""
    if aggregation == "images":
        masked = np.where(onehot.T[None, :, :] > 0, sims[:, None, :], -np.inf)
        return masked.max(axis=2)
    if aggregation == "mean":
        return (sims @ onehot) / counts
    raise ValueError(f"pair scores cannot be aggregated by {aggregation!r}")


def _check_aggregation(aggregation: str, allowed: tuple[str, ...]) -> None:
    if aggregation not in allowed:
        raise ValueError(f"aggregation must be one of {', '.join(allowed)}, got {aggregation!r}")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class CosineScorer(Scorer):
    """Cosine similarities over a pool of L2-normalized features (N, D).

    ``raw_prototypes``: ``feats`` are raw (unnormalized) embeddings; similarities use their unit
    vectors, and a class prototype is the normalized mean of the raw vectors (the reference
    study's CLIP rule, where a large-norm support image weighs more) rather than of unit ones.
    """

    def __init__(
        self, feats: np.ndarray, aggregation: Aggregation = "mean", raw_prototypes: bool = False
    ) -> None:
        _check_aggregation(aggregation, AGGREGATIONS)
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        self.raw = feats if raw_prototypes else None
        self.feats = l2_normalize(feats) if raw_prototypes else feats
        self.aggregation = aggregation

    def pair_sim(self, q_idx: np.ndarray, s_idx: np.ndarray) -> np.ndarray:
        return self.feats[q_idx] @ self.feats[s_idx].T

    def class_sim(
        self, q_idx: np.ndarray, s_idx: np.ndarray, s_labels: np.ndarray, classes: np.ndarray
    ) -> np.ndarray:
        onehot, counts = class_onehot(s_labels, classes)
        if self.aggregation == "prototype":
            protos = onehot.T @ (self.feats if self.raw is None else self.raw)[s_idx]
            protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
            return self.feats[q_idx] @ protos.T
        return aggregate_pairs(self.pair_sim(q_idx, s_idx), onehot, counts, self.aggregation)


class PairwiseScorer(Scorer):
    """A scorer with pair scores only: no vector per item, so no prototype and no vector index.

    Subclasses implement ``pair_sim``; a class score is the mean pair score over the class's
    support items (``"mean"``) or the best one (``"images"``).
    """

    def __init__(self, aggregation: Aggregation = "mean") -> None:
        _check_aggregation(aggregation, ("mean", "images"))
        self.aggregation = aggregation

    def class_sim(
        self, q_idx: np.ndarray, s_idx: np.ndarray, s_labels: np.ndarray, classes: np.ndarray
    ) -> np.ndarray:
        onehot, counts = class_onehot(s_labels, classes)
        return aggregate_pairs(self.pair_sim(q_idx, s_idx), onehot, counts, self.aggregation)


class MatrixScorer(PairwiseScorer):
    """Pair scores read from a precomputed (P, P) similarity matrix of one pool."""

    def __init__(self, sims: np.ndarray, aggregation: Aggregation = "mean") -> None:
        super().__init__(aggregation)
        sims = np.asarray(sims)
        if sims.ndim != 2 or sims.shape[0] != sims.shape[1]:
            raise ValueError(f"a similarity matrix must be square, got shape {sims.shape}")
        self.sims = sims

    def pair_sim(self, q_idx: np.ndarray, s_idx: np.ndarray) -> np.ndarray:
        return self.sims[np.ix_(q_idx, s_idx)]
