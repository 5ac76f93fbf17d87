"""``seed``: the reference study's protocol, exactly (see ``PROTOCOL.md`` of the study).

Support = the first ``shots`` (5) test images of each unseen class in file order; queries = the
rest. A query is a hit when its class is among the ``k`` nearest of the unseen classes, with
k = half the class count (5 of 10, chance 50%). Methods that declare ``support_aggregation =
"images"`` rank the individual support images instead (the study's method 4), and hit when one of
the ``k`` nearest images has the query's class. Top-1 on the same split is reported beside it.

Unlike the study, no random flip is applied at evaluation, so the numbers are deterministic. Each
number carries a 95% Wilson interval over its queries (``ci95_low``, ``ci95_high``).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from imsim.errors import UserError
from imsim.protocols.base import Protocol
from imsim.results import record
from imsim.scoring import Scorer

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


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for z = 1.96).

    The seed protocol scores a fixed set of queries once, so its uncertainty is that of a
    proportion over the queries; Wilson's interval stays inside [0, 1] and keeps its coverage
    near 0% and 100%, where the normal interval does not (e.g. 100% top-5 on shapes).
    """
    if n <= 0:
        raise ValueError("the interval needs at least one query")
    p = hits / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 and n the bound is exactly 0 or 1 (the formula leaves a rounding error).
    low = 0.0 if hits == 0 else float(center - half)
    high = 1.0 if hits == n else float(center + half)
    return low, high


def topk_hits(
    scores: np.ndarray, candidate_labels: np.ndarray, query_labels: np.ndarray, k: int
) -> np.ndarray:
    """Per query: is its label among the labels of its ``k`` highest-scoring candidates?"""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return (candidate_labels[top] == query_labels[:, None]).any(axis=1)


@dataclass(frozen=True)
class Seed(Protocol):
    """Top-k (the study's number) and top-1 under the seed protocol, with chance levels.

    ``shots``: support images per class (the study's 5); ``k``: None = half the class count.
    """

    name = "seed"
    shots: int = SHOTS
    k: int | None = None

    def __post_init__(self) -> None:
        if self.shots < 1 or (self.k is not None and self.k < 1):
            raise UserError(f"the seed protocol needs shots >= 1 and k >= 1, got {self}")

    def evaluate(
        self,
        scorer: Scorer,
        labels: np.ndarray,
        classes: tuple[int, ...],
        method: str,
        class_names: list[str] | None = None,
    ) -> list[dict]:
        del class_names  # unused: every error here is about counts, not names
        labels = np.asarray(labels)
        ranked = np.asarray(sorted(classes))
        n = len(ranked)
        k = default_k(n) if self.k is None else self.k
        shots = self.shots
        s_idx, q_idx = seed_split(labels, classes, shots)
        s_lab, q_lab = labels[s_idx], labels[q_idx]
        by_images = scorer.aggregation == "images"
        if by_images:
            scores, cand = scorer.pair_sim(q_idx, s_idx), s_lab
        else:
            scores, cand = scorer.class_sim(q_idx, s_idx, s_lab, ranked), ranked
        rows = []
        for kk in dict.fromkeys([k, 1]):
            hits = topk_hits(scores, cand, q_lab, kk)
            low, high = wilson_interval(int(hits.sum()), len(hits))
            rows.append(
                record(
                    method,
                    self.name,
                    f"top{kk}",
                    hits.mean(),
                    ci95_low=low,
                    ci95_high=high,
                    ci95_method="wilson over queries",
                    chance=chance(kk, n, shots, by_images),
                    k=kk,
                    n_classes=n,
                    n_queries=len(q_idx),
                    shots=shots,
                    ranks="support images" if by_images else "classes",
                    n_candidates=len(cand),
                )
            )
        return rows
