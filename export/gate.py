"""``python -m export --precision fp16|int8 --gate``: the parity gate at export, and the automatic
FP32 fallback that makes a reduced-precision graph pass it.

The gate is ``bench.parity``'s (``bench.parity.judge``: cosine, tie-aware top-1 neighbour
agreement, the paired episode delta's CI), run on ONNX Runtime (CPU) against the PyTorch fp32
module, but on a **seen-class validation set**: the seen classes' test images, with the seen
classes as the episode classes. The unseen classes stay untouched for ``bench.parity`` to judge
the chosen graph afterwards; choosing what to keep in FP32 on them would be tuning on the test set.

When the full reduced-precision graph fails, ``search`` looks for a small set of nodes to keep in
FP32 (FP16: the converter's node block list; INT8: the quantizer's ``nodes_to_exclude``):
1. blocks first: the graph's units (INT8: the quantizable matrix ops; FP16: the computing nodes
   converted to FP16) grouped by module scope (``block_of``: a numbered child such as
   ``layers.3``, else the module the op ran in). Each block is tried alone in FP32; blocks are
   then added in the order of how close they alone came to passing, until the graph passes;
2. then pruning: each kept block is dropped again if the rest still passes, and inside the kept
   blocks each unit is released to reduced precision again if the rest still passes (backward
   elimination, so the result is minimal: no single kept block or op can go).
Every candidate is built and judged for real. The search stops at ``max_trials`` candidates: if
nothing passed by then (or even keeping every block in FP32 fails) there is no graph to keep.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imsim.data.types import Dataset, Split
from imsim.errors import UserError
from imsim.methods.base import Embedder
from imsim.parity import Tolerances

GATE_BATCH = 256
_NUMBERED = re.compile(r".*\.\d+$")


def block_of(name: str) -> str:
    """The block a node belongs to, from its ONNX name (the exporter's module scopes): the scope
    up to its first numbered child (``/module/network/layers/layers.3/``), else the scope of the
    module the op ran in (``/module/network/head/``); a name without scopes is its own block."""
    parts = name.split("/")
    if len(parts) < 3:
        return name
    for i, p in enumerate(parts[:-1]):
        if _NUMBERED.match(p):
            return "/".join(parts[: i + 1]) + "/"
    return "/".join(parts[:-1]) + "/"


def group_units(units: Sequence[str]) -> dict[str, list[str]]:
    """Units grouped by ``block_of``, blocks in graph order."""
    groups: dict[str, list[str]] = {}
    for u in units:
        groups.setdefault(block_of(u), []).append(u)
    return groups


@dataclass(frozen=True)
class GateSet:
    """What candidates are judged on: the seen-class test images, the reference embeddings of
    them (PyTorch fp32), the tolerances and the episode sampler."""

    method: Embedder
    pool: Split
    classes: tuple[int, ...]
    class_names: list[str]
    reference: np.ndarray
    tol_for: Callable[[str], Tolerances]
    episodes: dict[str, int]
    info: dict[str, Any]


def validation_pool(ds: Dataset, limit: int | None = None) -> Split:
    """The seen classes' test images (at most ``limit``, evenly spaced within each class)."""
    pool = ds.test.subset(ds.split.seen)
    if limit is None or limit >= len(pool):
        return pool
    classes = sorted(set(ds.split.seen))
    per = max(1, limit // len(classes))
    idx = []
    for c in classes:
        rows = np.flatnonzero(pool.labels == c)
        idx.append(rows[np.linspace(0, len(rows) - 1, min(per, len(rows))).astype(int)])
    keep = np.sort(np.concatenate(idx))
    paths = [pool.paths[i] for i in keep] if pool.paths is not None else None
    return Split(pool.images[keep], pool.labels[keep], paths)


def gate_set(
    method: Embedder,
    ds: Dataset,
    tol_for: Callable[[str], Tolerances],
    episodes: dict[str, int],
    limit: int | None = None,
) -> GateSet:
    """The seen-class validation set with its reference embeddings (the module in PyTorch fp32
    eager, as ``bench.parity``'s reference)."""
    from imsim.methods import embed_all, reference_runner

    module = method.as_module()
    if method.spec.fits_on_seen:
        method.fit(ds.train.subset(ds.split.seen), ds.class_names)
    pool = validation_pool(ds, limit)
    seen = tuple(sorted(set(ds.split.seen)))
    if len(seen) < 2:
        raise UserError("--gate needs at least 2 seen classes to draw episodes from")
    ref = embed_all(reference_runner(module, "cpu"), pool.images, "gate reference", GATE_BATCH)
    info = {
        "dataset": ds.name,
        "split": "test",
        "classes": [ds.class_names[c] for c in seen],
        "n_images": len(pool),
        "episodes": dict(episodes),
    }
    return GateSet(method, pool, seen, ds.class_names, ref, tol_for, dict(episodes), info)


@dataclass(frozen=True)
class Verdict:
    """One candidate's gate result: PASS/FAIL, the worst gated check's slack (>= 0 passes; how
    far inside or outside its tolerance, as a fraction of the room the tolerance gives) and the
    figures recorded in the sidecar."""

    passed: bool
    slack: float
    figures: dict[str, Any]


def slack(rows: list[dict]) -> float:
    """The worst gated check's slack: ``>=`` checks (value - limit) / (1 - limit), the episode
    check (limit - (|mean| + CI)) / limit; NaN counts as -inf."""
    worst = math.inf
    for r in rows:
        if not r.get("gate"):
            continue
        v, lim = r["value"], r["tolerance"]
        if r["op"] == ">=":
            s = (v - lim) / max(1.0 - lim, 1e-12)
        else:
            s = (lim - (abs(v) + r.get("ci95", 0.0))) / lim
        worst = min(worst, s if math.isfinite(s) else -math.inf)
    return worst


def figures(rows: list[dict], passed: bool) -> dict[str, Any]:
    """The gate's figures for the sidecar: the gated checks, raw agreement, and which failed."""
    by = {r["metric"]: r for r in rows if r["protocol"] in ("parity", "episodes")}
    ep = by["top1_delta_points"]
    return {
        "passed": passed,
        "cosine_min": by["cosine_min"]["value"],
        "cosine_mean": by["cosine_mean"]["value"],
        "top1_agreement": by["top1_agreement"]["value"],
        "top1_agreement_tie_aware": by["top1_agreement_tie_aware"]["value"],
        "episode_delta_points": ep["value"],
        "episode_delta_ci95": ep["ci95"],
        "failed": [r["metric"] for r in rows if r.get("gate") and not r["passed"]],
    }


def judge_graph(gs: GateSet, path: Path, precision: str) -> Verdict:
    """Run the graph at ``path`` on ONNX Runtime (CPU) over the validation set and judge it."""
    from bench.parity import judge
    from imsim.backends.onnxruntime_backend import OnnxRuntimeBackend
    from imsim.methods import embed_all

    h, w = gs.pool.images.shape[1:3]
    side = {"precision": precision, "input_size": [h, w]}
    backend = OnnxRuntimeBackend(path, precision, sidecar=side)
    out = embed_all(backend, gs.pool.images, "gate", GATE_BATCH)
    tags = {"backend": backend.name, "precision": precision, "device": "cpu"}
    rows, passed = judge(
        gs.method,
        gs.reference,
        out,
        tags,
        gs.pool,
        gs.classes,
        gs.class_names,
        gs.tol_for(precision),
        gs.episodes,
    )
    return Verdict(passed, slack(rows), figures(rows, passed))


class TrialLimit(Exception):
    """The search ran out of candidates it may try."""


@dataclass
class Fallback:
    """The search's outcome: ``kept`` (node names kept FP32, empty when the full graph passed),
    their blocks, the verdicts before and after (``after`` None: nothing passed) and every
    candidate tried."""

    kept: list[str]
    before: Verdict
    after: Verdict | None
    blocks: dict[str, list[str]] = field(default_factory=dict)
    reasons: dict[str, dict[str, Any]] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kept_fp32": self.kept,
            "kept_blocks": self.blocks,
            "why": self.reasons,
            "before": self.before.figures,
            "after": self.after.figures if self.after else None,
            "trials": self.trials,
            **({"note": self.note} if self.note else {}),
        }


def search(
    groups: dict[str, list[str]],
    trial: Callable[[list[str]], Verdict],
    max_trials: int = 64,
) -> Fallback:
    """A small set of units to keep FP32 so that ``trial(kept)`` passes (see the module doc).

    ``groups``: block -> its units, in graph order; ``trial``: builds the graph keeping the given
    units FP32 and judges it.
    """
    log: list[dict[str, Any]] = []
    cache: dict[tuple[str, ...], Verdict] = {}
    order = {u: i for i, u in enumerate(u for us in groups.values() for u in us)}

    def run(units: set[str], step: str) -> Verdict:
        key = tuple(sorted(units, key=order.__getitem__))
        if key in cache:
            return cache[key]
        if len(log) >= max_trials:
            raise TrialLimit
        v = trial(list(key))
        cache[key] = v
        log.append({"step": step, "kept_fp32": len(key), "blocks": _blocks(key), **v.figures})
        return v

    before = run(set(), "full precision reduction")
    result = Fallback([], before, before, trials=log)
    if before.passed:
        return result
    alone: dict[str, Verdict] = {}
    try:
        for b, units in groups.items():
            alone[b] = run(set(units), f"block {b} in FP32")
        ranked = sorted(groups, key=lambda b: -alone[b].slack)
        kept_blocks: list[str] = []
        verdict = None
        for b in ranked:
            kept_blocks.append(b)
            verdict = run(_units(groups, kept_blocks), "add block " + b)
            if verdict.passed:
                break
        if verdict is None or not verdict.passed:
            result.after = None
            result.note = f"even keeping all {len(groups)} blocks in FP32 fails the gate"
            return result
    except TrialLimit:
        result.after = None
        result.note = f"no candidate passed within {max_trials} trials (--gate-max-trials)"
        return result
    kept = _units(groups, kept_blocks)
    try:
        for b in reversed(kept_blocks[:-1]):  # the last one added was needed to pass
            rest = kept - set(groups[b])
            v = run(rest, "drop block " + b)
            if v.passed:
                kept, verdict = rest, v
        for u in sorted(kept, key=order.__getitem__):
            if len(kept) == 1:
                break
            rest = kept - {u}
            v = run(rest, "release " + u)
            if v.passed:
                kept, verdict = rest, v
    except TrialLimit:
        result.note = f"pruning stopped at the trial limit ({max_trials}); the kept set may shrink"
    result.kept = sorted(kept, key=order.__getitem__)
    result.after = verdict
    result.blocks = {b: [u for u in us if u in kept] for b, us in groups.items() if kept & set(us)}
    result.reasons = {
        b: {"gate_with_only_this_block_fp32": alone[b].figures} for b in result.blocks
    }
    return result


def _units(groups: dict[str, list[str]], blocks: Sequence[str]) -> set[str]:
    return {u for b in blocks for u in groups[b]}


def _blocks(units: Sequence[str]) -> list[str]:
    return sorted({block_of(u) for u in units})
