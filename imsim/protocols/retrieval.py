"""``retrieval``: every unseen-class test image queries all the others.

Recall@k = fraction of queries with at least one same-class image among their k nearest;
mAP@R = mean average precision at R, where R is the number of other images of the query's class
(Musgrave et al., "A Metric Learning Reality Check", 2020). Computed here on any similarity
matrix, since not every method has embeddings compared by cosine; tests check it against
pytorch-metric-learning's ``AccuracyCalculator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imsim.errors import UserError
from imsim.protocols.base import Protocol
from imsim.results import record
from imsim.scoring import Scorer


def retrieval_metrics(
    sims: np.ndarray,
    labels: np.ndarray,
    ks: tuple[int, ...] = (1, 5),
    query_idx: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics over one pool of ``labels``; a query's own entry is excluded.

    ``sims`` is the square (N, N) matrix over the pool, or, with ``query_idx``, the (Q, N) rows of
    the pool positions ``query_idx`` only (every other pool item is still a candidate).

    A query whose class has no other image in the pool can never be right; like
    pytorch-metric-learning's ``AccuracyCalculator`` it is left out of every metric (counted in
    ``n_excluded``). The query itself is removed from its ranking by position, so ties (e.g.
    candidates scored ``-inf``) can never push another item out in its place.
    """
    sims = np.asarray(sims, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(labels)
    q = np.arange(n) if query_idx is None else np.asarray(query_idx)
    if sims.shape != (len(q), n):
        raise ValueError(f"sims has shape {sims.shape}, expected {(len(q), n)}")
    q_labels = labels[q]
    r = (q_labels[:, None] == labels[None, :]).sum(1) - 1  # same-class neighbours per query
    valid = r > 0
    out: dict[str, float] = {"n_excluded": float(np.count_nonzero(~valid))}
    if not valid.any():
        raise ValueError("no query has another image of its class in the pool")
    q, q_labels, r, sims = q[valid], q_labels[valid], r[valid], sims[valid]
    order = np.argsort(-sims, axis=1, kind="stable")
    order = order[order != q[:, None]].reshape(len(q), n - 1)  # drop the query itself
    rel = labels[order] == q_labels[:, None]  # (Q, n-1)
    out.update({f"recall@{k}": float(rel[:, :k].any(axis=1).mean()) for k in ks})
    prec = np.cumsum(rel, axis=1) / np.arange(1, n)
    within_r = np.arange(n - 1)[None, :] < r[:, None]
    out["map@r"] = float(((prec * rel * within_r).sum(1) / r).mean())
    return out


@dataclass(frozen=True)
class Retrieval(Protocol):
    """Every image of ``classes`` queries all the others: Recall@k for each of ``ks``, mAP@R."""

    name = "retrieval"
    ks: tuple[int, ...] = (1, 5)

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise UserError(f"retrieval needs recall cut-offs k >= 1, got {self.ks}")

    def evaluate(
        self,
        scorer: Scorer,
        labels: np.ndarray,
        classes: tuple[int, ...],
        method: str,
        class_names: list[str] | None = None,
    ) -> list[dict]:
        del class_names  # no error here names a class
        labels = np.asarray(labels)
        idx = np.flatnonzero(np.isin(labels, np.asarray(classes)))
        sims = scorer.pair_sim(idx, idx)
        metrics = retrieval_metrics(sims, labels[idx], self.ks)
        excluded = int(metrics.pop("n_excluded"))
        return [
            record(method, self.name, m, v, n_queries=len(idx) - excluded, n_excluded=excluded)
            for m, v in metrics.items()
        ]
