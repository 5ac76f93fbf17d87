"""``seed``: the reference study's protocol, exactly (see ``PROTOCOL.md`` of the study).

Support = the first ``shots`` (5) test images of each unseen class in file order; queries = the
rest. A query is a hit when its class is among the ``k`` nearest of the unseen classes, with
k = half the class count (5 of 10, chance 50%). Methods that declare ``support_aggregation =
"images"`` rank the individual support images instead (the study's method 4), and hit when one of
the ``k`` nearest images has the query's class. Top-1 on the same split is reported beside it.

Unlike the study, no random flip is applied at evaluation, so the numbers are deterministic.
"""

from __future__ import annotations

from math import comb

import numpy as np

from imsim.errors import UserError
from imsim.methods.base import Scorer
from imsim.results import record

SHOTS = 5


def seed_split(
    labels: np.ndarray, unseen: tuple[int, ...] | list[int], shots: int = SHOTS
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into ``labels``) of the support and query images, in file order."""
    labels = np.asarray(labels)
    support, query = [], []
    for c in unseen:
        idx = np.flatnonzero(labels == c)
        if len(idx) <= shots:
            raise UserError(
                f"class {c} has {len(idx)} test images; the seed protocol needs more than {shots}"
            )
        support.append(idx[:shots])
        query.append(idx[shots:])
    return np.sort(np.concatenate(support)), np.sort(np.concatenate(query))


def default_k(n_classes: int) -> int:
    """The study's rule: the label must be among the nearest half of the classes (5 of 10)."""
    return max(1, n_classes // 2)


def chance(k: int, n_classes: int, shots: int, by_images: bool) -> float:
    """Probability that a random ranking hits: of classes, or of the n*shots support images."""
    if not by_images:
        return k / n_classes
    total = n_classes * shots
    return 1.0 - comb(total - shots, k) / comb(total, k)


def topk_hits(
    scores: np.ndarray, candidate_labels: np.ndarray, query_labels: np.ndarray, k: int
) -> np.ndarray:
    """Per query: is its label among the labels of its ``k`` highest-scoring candidates?"""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return (candidate_labels[top] == query_labels[:, None]).any(axis=1)


def evaluate(
    scorer: Scorer,
    labels: np.ndarray,
    unseen: tuple[int, ...],
    method: str,
    shots: int = SHOTS,
    k: int | None = None,
) -> list[dict]:
    """Top-k (the study's number) and top-1 under the seed protocol, with chance levels."""
    labels = np.asarray(labels)
    classes = np.asarray(sorted(unseen))
    n = len(classes)
    k = default_k(n) if k is None else k
    s_idx, q_idx = seed_split(labels, unseen, shots)
    s_lab, q_lab = labels[s_idx], labels[q_idx]
    by_images = scorer.aggregation == "images"
    if by_images:
        scores, cand = scorer.pair_sim(q_idx, s_idx), s_lab
    else:
        scores, cand = scorer.class_sim(q_idx, s_idx, s_lab, classes), classes
    rows = []
    for kk in dict.fromkeys([k, 1]):
        hits = topk_hits(scores, cand, q_lab, kk)
        rows.append(
            record(
                method,
                "seed",
                f"top{kk}",
                hits.mean(),
                chance=chance(kk, n, shots, by_images),
                k=kk,
                n_classes=n,
                n_queries=len(q_idx),
                shots=shots,
                ranks="support images" if by_images else "classes",
            )
        )
    return rows
