"""Measurements of the search backends: ``python -m search recall`` and ``python -m search bench``.

``recall`` uses an index's own vectors: sampled items query the index, each one excluded from
its own results, and faiss's top-k is compared with exact search's. ``bench`` times queries on
galleries of random unit vectors (the latency of both backends depends on the number and
dimension of the vectors, not on what they encode); recall on random vectors is a worst case for
faiss's clustering, so it is reported there only as a lower bound.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from imsim.errors import UserError
from imsim.methods.base import l2_normalize
from imsim.results import make_results, record, write_json_atomic
from search.backends import ExactBackend, FaissBackend, recall_at_k

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
MAX_BENCH_BYTES = 16 << 30  # random vectors of one size held in memory at once


def _timed(fn: SearchFn, queries: np.ndarray, k: int) -> tuple[np.ndarray, dict[str, float]]:
    """One query at a time (a server's case): ids and per-query latency statistics in ms."""
    for q in queries[:3]:
        fn(q[None], k)  # warm-up
    ids, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, i = fn(q[None], k)
        times.append(1000 * (time.perf_counter() - t0))
        ids.append(i[0])
    t = np.asarray(times)
    stats = {
        "p50_ms": float(np.median(t)),
        "p95_ms": float(np.percentile(t, 95)),
        "mean_ms": float(t.mean()),
    }
    t0 = time.perf_counter()
    fn(queries, k)
    stats["batched_ms_per_query"] = 1000 * (time.perf_counter() - t0) / len(queries)
    return np.stack(ids), stats


def _unit_vectors(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, chunk):
        out[i : i + chunk] = l2_normalize(
            rng.standard_normal((min(chunk, n - i), dim), dtype=np.float32)
        )
    return out


def _table(rows: list[dict], first: str) -> str:
    lines = [
        f"| {first} | backend | nlist | nprobe | p50 ms | p95 ms | batched ms/query | "
        "recall@k | build s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec = f"{r['recall']:.4f}" if "recall" in r else "1 (exact)"
        lines.append(
            f"| {r[first]:,} | {r['backend']} | {r.get('nlist', '')} | {r.get('nprobe', '')} | "
            f"{r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['batched_ms_per_query']:.3f} | {rec} | "
            f"{r.get('build_s', 0):.2f} |"
        )
    return "\n".join(lines)


def _faiss_rows(
    x: np.ndarray,
    queries: np.ndarray,
    exact_ids: np.ndarray,
    k: int,
    nprobes: list[int],
    nlist: int | None,
    extra: dict,
    drop_self: np.ndarray | None = None,
) -> list[dict]:
    t0 = time.perf_counter()
    fb = FaissBackend(x, nlist=nlist)
    build = time.perf_counter() - t0
    kk = k + (drop_self is not None)
    rows = []
    for nprobe in nprobes:
        fb.nprobe = nprobe
        ids, stats = _timed(fb.search, queries, kk)
        if drop_self is not None:
            ids = _without_self(ids, drop_self, k)
        rows.append(
            {
                **extra,
                "backend": "faiss-ivf",
                "nlist": fb.nlist,
                "nprobe": fb.nprobe,
                "build_s": build,
                "recall": recall_at_k(exact_ids, ids, k),
                **stats,
            }
        )
    return rows


def _without_self(ids: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """Each row's ids without the query's own id, cut to k."""
    out = np.full((len(ids), k), -1, dtype=np.int64)
    for j, (row, s) in enumerate(zip(ids, self_ids, strict=True)):
        kept = row[row != s][:k]
        out[j, : len(kept)] = kept
    return out


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _conditions(load_before: tuple[float, ...]) -> dict:
    """What else the machine was doing: latency on a shared CPU depends on it."""
    return {
        "loadavg_1_5_15_before": list(load_before),
        "loadavg_1_5_15_after": list(os.getloadavg()),
        "thread_env": {v: os.environ[v] for v in THREAD_VARS if v in os.environ},
    }


def _records(rows: list[dict], protocol: str, k: int) -> list[dict]:
    out = []
    for r in rows:
        extra = {key: v for key, v in r.items() if key not in ("backend", "p50_ms")}
        if "recall" in extra:
            extra[f"recall@{k}"] = extra.pop("recall")
        out.append(record(r["backend"], protocol, "query_ms_p50", r["p50_ms"], k=k, **extra))
    return out


def recall(args: argparse.Namespace, nprobes: list[int]) -> int:
    """faiss recall@k against exact search, with leave-one-out queries from the index."""
    from search.index import load_index

    load = os.getloadavg()
    index = load_index(args.index)
    x = index.vectors
    n = len(x)
    if n < 2 * args.k:
        raise UserError(f"the index has {n} items; recall@{args.k} needs at least {2 * args.k}")
    rng = np.random.default_rng(args.seed)
    qi = np.sort(rng.choice(n, min(args.queries, n), replace=False))
    queries = x[qi]
    exact = ExactBackend(x)
    ids, stats = _timed(exact.search, queries, args.k + 1)
    exact_ids = _without_self(ids, qi, args.k)
    extra = {"n_vectors": n, "dim": x.shape[1], "queries": len(qi)}
    rows = [{**extra, "backend": "exact", **stats}]
    rows += _faiss_rows(x, queries, exact_ids, args.k, nprobes, args.nlist, extra, drop_self=qi)
    print(f"{args.index}: {n} vectors ({index.method['item']}), {len(qi)} leave-one-out queries")
    print(_table(rows, "n_vectors"))
    doc = make_results(
        "search-recall",
        _records(rows, "search-recall", args.k),
        config=vars(args),
        index={
            "path": str(index.path),
            "method": index.method,
            "source": index.manifest["source"],
            "items": n,
        },
        conditions=_conditions(load),
    )
    print(f"wrote {write_json_atomic(args.out, doc)}", file=sys.stderr)
    return 0


def latency(args: argparse.Namespace, sizes: list[int], nprobes: list[int]) -> int:
    """Query latency of exact and faiss search on random unit vectors of each size."""
    load = os.getloadavg()
    too_big = [n for n in sizes if n * args.dim * 4 > MAX_BENCH_BYTES]
    if too_big:
        raise UserError(
            f"--sizes {too_big[0]:,} x --dim {args.dim} float32 vectors is over "
            f"{MAX_BENCH_BYTES >> 30} GiB; use a smaller size or dimension"
        )
    rows: list[dict] = []
    for n in tqdm(sizes, desc="sizes", unit="size"):
        if n < args.queries or n < args.k:
            raise UserError(f"size {n} is smaller than --queries or --k")
        rng = np.random.default_rng([args.seed, n])
        x = _unit_vectors(rng, n, args.dim)
        queries = _unit_vectors(rng, args.queries, args.dim)
        extra = {"n_vectors": n, "dim": args.dim, "queries": args.queries}
        exact_ids, stats = _timed(ExactBackend(x).search, queries, args.k)
        rows.append({**extra, "backend": "exact", **stats})
        if not args.no_faiss:
            rows += _faiss_rows(x, queries, exact_ids, args.k, nprobes, None, extra)
        del x
    print(_table(rows, "n_vectors"))
    print("random unit vectors: latency is representative, faiss recall is a worst case")
    doc = make_results(
        "search-latency",
        _records(rows, "search-latency", args.k),
        config=vars(args),
        data="random unit vectors (standard normal, L2-normalized)",
        conditions=_conditions(load),
    )
    print(f"wrote {write_json_atomic(args.out, doc)}", file=sys.stderr)
    return 0
