"""The precision ladder: per method, every measured precision (fp32 / fp16 / bf16 / int8) of every
backend, with its speed at one batch size, its speed-up over PyTorch fp32 eager on the same
machine, and the figures and verdict of the parity gate (``bench.parity``) for that method,
backend and precision.

Speeds come from fps files, verdicts from parity files; a setup with one and not the other still
gets a row, with the missing cells marked "not measured". A speed-up is only computed against a
torch fp32 eager run of the same method on the same machine (same hardware label) at the same
batch, never across machines.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report.identity import dataset_label, machine_label, method_label, setup_key, setup_label
from imsim.errors import UserError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
BACKENDS = ("torch", "onnxruntime", "openvino", "trt")
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Gate:
    """The parity gate's figures for one setup on one dataset, from one parity file."""

    dataset: str
    passed: bool
    gated: bool  # the file marks which checks decide (bench.parity since the gate existed)
    setup: str  # the setup label the parity file measured
    machine: str  # where the parity file ran (reduced precision can differ by CPU: VNNI, bf16)
    tie_aware_top1: float | None
    cosine_min: float | None
    delta_points: float | None  # paired episode top-1 delta, backend minus reference
    delta_ci95: float | None
    delta_tolerance: float | None
    episodes: int | None
    file: str


@dataclass(frozen=True)
class Point:
    """One point of the ladder plot: a rung's paired delta (points, 95% CI) and speed-up."""

    label: str
    backend: str
    delta: float
    ci95: float
    speedup: float
    passed: bool
    tolerance: float | None


@dataclass
class Row:
    """One rung: a backend setup of a method, its speed and its parity gate on one dataset."""

    precision: str
    backend: dict[str, Any]
    label: str
    device: str | None = None
    machine: str | None = None  # ``device`` without the thread count
    speed: dict[str, Any] | None = None  # the fps record at ``batch`` (any status)
    speedup: float | None = None
    reference: bool = False
    gates: list[Gate] = field(default_factory=list)


def _finite(v: Any) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def gate_figures(path: Path, doc: dict) -> Gate:
    """What a parity file says about the gate: tie-aware top-1 agreement, cosine min, the paired
    episode delta with its CI, and the verdict (figures the file lacks are None)."""
    recs = doc["results"]

    def find(metric: str, paired: bool = False) -> dict:
        """The first record of ``metric`` (with ``paired``: the episodes one with a CI)."""
        for r in recs:
            if r.get("metric") == metric and (
                not paired or (r.get("protocol") == "episodes" and "ci95" in r)
            ):
                return r
        return {}

    tie = find("top1_agreement_tie_aware")
    cos = find("cosine_min")
    paired = find("top1_delta_points", paired=True)
    episodes = paired.get("paired_episodes")
    return Gate(
        dataset=dataset_label(doc),
        passed=bool(doc.get("passed")),
        gated=any("gate" in r for r in recs),
        setup=setup_label(doc.get("backend", {})),
        machine=machine_label(doc),
        tie_aware_top1=_finite(tie.get("value")),
        cosine_min=_finite(cos.get("value")),
        delta_points=_finite(paired.get("value")),
        delta_ci95=_finite(paired.get("ci95")),
        delta_tolerance=_finite(paired.get("tolerance")),
        episodes=episodes if isinstance(episodes, int) and not isinstance(episodes, bool) else None,
        file=str(path),
    )


def is_torch_fp32_eager(backend: dict[str, Any]) -> bool:
    """PyTorch fp32 without ``torch.compile``: what a speed-up is measured against."""
    return (
        backend.get("backend") == "torch"
        and backend.get("precision") == "fp32"
        and not backend.get("compile")
    )


def is_parity_reference(backend: dict[str, Any]) -> bool:
    """bench.parity's reference itself: PyTorch fp32 eager, NCHW."""
    return is_torch_fp32_eager(backend) and not backend.get("channels_last")


def parse_ladder_batches(items: list[str]) -> dict[str | None, int]:
    """``--ladder-batch`` values: ``BATCH`` (every method) or ``METHOD=BATCH``; the key None
    holds the batch for every method not named."""
    out: dict[str | None, int] = {}
    for item in items:
        method, _, batch = item.rpartition("=")
        if not batch.isdigit() or int(batch) < 1 or (_ and not method):
            raise UserError(f"--ladder-batch wants BATCH or METHOD=BATCH, got {item!r}")
        out[method or None] = int(batch)
    return out


def _name(label: str) -> str:
    """The method's bare name in a label: ``triplet`` in ``triplet (ResNet-56)``."""
    return label.split(" (", 1)[0]


def ladder_batch(method: str, setups: list[dict[str, Any]], asked: dict[str | None, int]) -> int:
    """The batch a method's rungs are compared at: asked for (by label, then by bare name, then
    for all), else the largest batch any of its setups measured successfully (0 when none)."""
    for key in (method, _name(method), None):
        if key in asked:
            return asked[key]
    ok = [b for s in setups for b, r in s["rows"].items() if r.get("status") == "ok" and b > 0]
    return max(ok, default=0)


def _images_per_s(row: Row) -> float | None:
    r = row.speed
    return _finite(r.get("images_per_s")) if r and r.get("status") == "ok" else None


def _order(row: Row) -> tuple:
    p, b = row.precision, row.backend.get("backend")
    return (
        PRECISIONS.index(p) if p in PRECISIONS else len(PRECISIONS),
        p,
        BACKENDS.index(b) if b in BACKENDS else len(BACKENDS),
        row.label,
        row.device or "",
    )


def _parity_by_setup(
    items: list[tuple[Path, dict]],
) -> dict[tuple, dict[str, list[tuple[Path, dict]]]]:
    """(method, backend, precision, device) -> {dataset: parity files, newest first}."""
    out: dict[tuple, dict[str, list[tuple[Path, dict]]]] = defaultdict(lambda: defaultdict(list))
    for path, doc in items:
        if not doc["results"]:
            continue
        b = doc.get("backend", {})
        method = method_label(doc["results"][0]["method"], doc.get("method"))
        key = (method, b.get("backend"), b.get("precision"), b.get("device"))
        out[key][dataset_label(doc)].append((path, doc))
    for per in out.values():
        for docs in per.values():
            docs.sort(key=lambda pd: pd[1].get("created", ""), reverse=True)
    return out


def _gates(
    per_dataset: dict[str, list[tuple[Path, dict]]],
    backend: dict,
    exact_only: bool = False,
    machine: str | None = None,
) -> list[Gate]:
    """One gate per dataset: the newest parity file of exactly this setup, else (unless
    ``exact_only``) the newest of the same method, backend and precision (its label is shown).
    Within each, a file from ``machine`` comes first: int8 and bf16 numerics differ between CPUs
    (VNNI or not, native bf16 or not), so a verdict from another machine is the last resort."""
    gates = []
    for _, docs in sorted(per_dataset.items()):
        exact = [pd for pd in docs if setup_key(pd[1].get("backend", {})) == setup_key(backend)]
        if exact or not exact_only:
            pool = exact or docs  # newest first; sorted() keeps that order among equals
            pool = sorted(
                pool, key=lambda pd: machine is not None and machine_label(pd[1]) != machine
            )
            gates.append(gate_figures(*pool[0]))
    return gates


def ladder_rows(
    setups: list[dict[str, Any]],
    parity: list[tuple[Path, dict]],
    asked: dict[str | None, int],
) -> dict[str, tuple[int, list[Row]]]:
    """method -> (batch, rungs in ladder order), for every method with an fps or parity file.

    ``setups`` are ``load.fps_setups``'s entries, ``parity`` the parity documents.
    """
    by_setup = _parity_by_setup(parity)
    used: set[tuple] = set()
    methods = sorted({s["method"] for s in setups} | {k[0] for k in by_setup})
    out: dict[str, tuple[int, list[Row]]] = {}
    for method in methods:
        mine = [s for s in setups if s["method"] == method]
        batch = ladder_batch(method, mine, asked)
        rows: list[Row] = []
        baseline: dict[str, float] = {}  # device -> torch fp32 eager images/s at batch
        for s in sorted(mine, key=lambda s: bool(s["backend"].get("channels_last"))):
            b = s["backend"]
            row = Row(
                precision=str(b.get("precision", "?")),
                backend=b,
                label=s["label"],
                device=s["device"],
                machine=s["machine"],
                speed=s["rows"].get(batch),
                reference=is_parity_reference(b),
            )
            ips = _images_per_s(row)
            if is_torch_fp32_eager(b) and ips is not None:
                baseline.setdefault(s["device"], ips)  # NCHW (the parity reference) first
            key = (method, b.get("backend"), b.get("precision"), b.get("device"))
            if key in by_setup:
                # The reference shows only a parity run of itself, never another setup's.
                row.gates = _gates(by_setup[key], b, row.reference, s["machine"])
                if not row.reference or all(
                    setup_key(d.get("backend", {})) == s["key"]
                    for docs in by_setup[key].values()
                    for _, d in docs
                ):
                    used.add(key)
            rows.append(row)
        for row in rows:
            ips, base = _images_per_s(row), baseline.get(row.device or "")
            row.speedup = ips / base if ips is not None and base else None
        for key, per in by_setup.items():
            if key[0] != method or key in used:
                continue
            newest_doc = max(
                (pd for docs in per.values() for pd in docs),
                key=lambda pd: pd[1].get("created", ""),
            )
            b = newest_doc[1].get("backend", {})
            rows.append(
                Row(
                    precision=str(key[2]),
                    backend=b,
                    label=setup_label(b),
                    reference=is_parity_reference(b),
                    gates=_gates(per, b),
                )
            )
        out[method] = (batch, sorted(rows, key=_order))
    return out


def _speed_cell(row: Row) -> str:
    r = row.speed
    if not r:
        return NOT_MEASURED
    if r.get("status") != "ok":
        return "OOM" if r.get("status") == "oom" else str(r.get("status") or "failed")
    return f"{r['images_per_s']:.1f}"


def _gate_cells(row: Row, gate: Gate | None) -> list[str]:
    if gate is None:
        return ["", "", "", "", "reference"] if row.reference else [NOT_MEASURED] * 5
    data = gate.dataset + ("" if gate.setup == row.label else f" (run as {gate.setup})")
    if row.machine is not None and gate.machine != row.machine:
        data += f" (on {gate.machine})"
    tie = f"{100 * gate.tie_aware_top1:.2f}%" if gate.tie_aware_top1 is not None else None
    cos = None  # as a distance from 1: 0.99994 and 0.99999 differ visibly
    if gate.cosine_min is not None:
        cos = f"{1 - gate.cosine_min:.1e}" if gate.cosine_min < 1 else "0"
    delta = None
    if gate.delta_points is not None and gate.delta_ci95 is not None:
        n = f", {gate.episodes} episodes" if gate.episodes else ""
        delta = f"{gate.delta_points:+.2f} ± {gate.delta_ci95:.2f}{n}"
    verdict = "PASS" if gate.passed else "FAIL"
    if not gate.gated:
        verdict += " (pre-gate checks)"
    return [data, tie or NOT_MEASURED, cos or NOT_MEASURED, delta or NOT_MEASURED, verdict]


def ladder_section(ladder: dict[str, tuple[int, list[Row]]]) -> list[str]:
    """One table per method; a setup checked on several datasets has one line per dataset."""
    lines: list[str] = []
    for method, (batch, rows) in ladder.items():
        at = f"batch {batch}" if batch else "no batch measured"
        lines += [
            f"### {method}, {at}",
            "",
            "| precision | backend setup | machine | images/s | x torch fp32 eager | parity data | "
            "tie-aware top-1 | 1 − cosine min | paired Δ episodes top-1, points (95% CI) | gate |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            speedup = f"{row.speedup:.2f}x" if row.speedup is not None else NOT_MEASURED
            head = [
                row.precision,
                row.label,
                row.device or NOT_MEASURED,
                _speed_cell(row),
                speedup,
            ]
            for gate in row.gates or [None]:
                lines.append("| " + " | ".join(head + _gate_cells(row, gate)) + " |")
        files = sorted({g.file for row in rows for g in row.gates})
        if files:
            lines += ["", "Parity files: " + ", ".join(f"`{f}`" for f in files) + "."]
        lines.append("")
    return lines


def ladder_points(ladder: dict[str, tuple[int, list[Row]]]) -> list[Point]:
    """Every rung with both a speed-up and a paired episode delta: the ladder plot's points."""
    points = []
    for method, (_, rows) in ladder.items():
        for row in rows:
            for g in row.gates:
                if row.speedup is None or g.delta_points is None or g.delta_ci95 is None:
                    continue
                points.append(
                    Point(
                        label=f"{method} {row.label} ({g.dataset})",
                        backend=str(row.backend.get("backend")),
                        delta=g.delta_points,
                        ci95=g.delta_ci95,
                        speedup=row.speedup,
                        passed=g.passed,
                        tolerance=g.delta_tolerance,
                    )
                )
    return points
