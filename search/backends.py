"""Nearest-neighbour backends over L2-normalized rows, by inner product (= cosine similarity).

``exact`` is one matrix product and a partial sort: correct by construction and fast enough for
galleries up to about a million vectors on a CPU. ``faiss`` is faiss's inverted-file index
(``IndexIVFFlat``): it compares a query only with the ``nprobe`` of ``nlist`` clusters nearest to
it, trading recall for speed; ``python -m search recall`` measures that trade on a real index.
faiss is an optional dependency (``pip install faiss-cpu``).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from imsim.errors import UserError

BACKENDS = ("exact", "faiss")


class Backend(Protocol):
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> (Q, k) scores and (Q, k) row ids, best first; id -1 = no result."""
        ...


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top ``k`` of a (Q, N) score matrix, best first; equal scores: lower id first."""
    n = scores.shape[1]
    k = min(k, n)
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(scores, ids, axis=1), ids


class ExactBackend:
    """Scores every row: ``queries @ vectors.T``, in query chunks to bound memory."""

    name = "exact"

    def __init__(self, vectors: np.ndarray, chunk_bytes: int = 1 << 28) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.chunk = max(1, chunk_bytes // (4 * max(1, len(self.vectors))))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        out_s, out_i = [], []
        for i in range(0, len(queries), self.chunk):
            s, ids = top_k(queries[i : i + self.chunk] @ self.vectors.T, k)
            out_s.append(s)
            out_i.append(ids)
        return np.concatenate(out_s), np.concatenate(out_i)


def default_nlist(n: int) -> int:
    """About sqrt(n) clusters, with at least 39 training points each (faiss's own minimum)."""
    return max(1, min(round(math.sqrt(n)), n // 39))


class FaissBackend:
    """faiss ``IndexIVFFlat`` with inner-product metric, trained on (a sample of) the rows."""

    name = "faiss"

    def __init__(
        self,
        vectors: np.ndarray,
        nlist: int | None = None,
        nprobe: int = 16,
        train_points_per_list: int = 64,
        seed: int = 0,
    ) -> None:
        try:
            import faiss
        except ImportError as e:
            raise UserError(
                "the faiss backend needs faiss: pip install faiss-cpu (or use --backend exact)"
            ) from e
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        self.nlist = nlist or default_nlist(n)
        if self.nlist > n:
            raise UserError(f"--nlist {self.nlist} exceeds the {n} vectors in the index")
        quantizer = faiss.IndexFlatIP(d)
        self.index = faiss.IndexIVFFlat(quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = seed
        m = min(n, self.nlist * train_points_per_list)
        sample = x if m == n else x[np.random.default_rng(seed).choice(n, m, replace=False)]
        self.index.train(sample)
        self.index.add(x)
        self.nprobe = nprobe

    @property
    def nprobe(self) -> int:
        return int(self.index.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if value < 1:
            raise UserError(f"--nprobe must be >= 1, got {value}")
        self.index.nprobe = min(value, self.nlist)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        s, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return s, ids


def make_backend(
    name: str, vectors: np.ndarray, nlist: int | None = None, nprobe: int = 16
) -> Backend:
    if name == "exact":
        return ExactBackend(vectors)
    if name == "faiss":
        return FaissBackend(vectors, nlist=nlist, nprobe=nprobe)
    raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def recall_at_k(exact_ids: np.ndarray, approx_ids: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each query's exact top ``k`` that the approximate top ``k`` also found."""
    hits = [
        len(set(e[:k].tolist()) & set(a[:k].tolist())) / min(k, len(e))
        for e, a in zip(exact_ids, approx_ids, strict=True)
    ]
    return float(np.mean(hits))
