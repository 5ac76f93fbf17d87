"""The report's figure: accuracy against throughput, one panel per dataset, and the precision
ladder's speed-up against the paired accuracy delta in a last panel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report.ladder import Point
from bench.report.tables import parity_text
from imsim.files import write_atomic

MARKERS = {"torch": "o", "onnxruntime": "s", "trt": "^", "openvino": "P"}


def accuracy_panel(
    ax: Any,
    ds: str,
    acc: dict[tuple[str, str], dict[str, Any]],
    setups: list[dict[str, Any]],
    parity: dict[tuple, dict[str, bool]],
) -> None:
    """Episodes top-1 on ``ds`` against the best images/s of each measured setup; hollow
    markers: parity not passed (or not run) for that setup."""
    labelled: dict[str, tuple[float, float]] = {}
    for s in setups:
        r = acc.get((ds, s["method"]), {}).get("episodes/top1")
        if not r or not s["best"]:
            continue
        text = parity_text(parity.get((s["method"], s["key"])), s["backend"])
        passed = text == "reference" or ("PASS" in text and "FAIL" not in text)
        x, y = s["best"]["images_per_s"], 100 * r["value"]
        color = f"C{sorted({t['method'] for t in setups}).index(s['method']) % 10}"
        ax.scatter(
            x,
            y,
            marker=MARKERS.get(s["backend"].get("backend"), "D"),
            facecolors=color if passed else "none",
            edgecolors=color,
            s=60,
        )
        if x > labelled.get(s["method"], (0.0, 0.0))[0]:
            labelled[s["method"]] = (x, y)
    for method, (x, y) in labelled.items():  # one label per method, at its fastest setup
        ax.annotate(method, (x, y), fontsize=7, xytext=(6, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("images/s, best batch, end to end (log)")
    ax.set_ylabel(f"episodes top-1 on {ds} (%)")
    ax.set_title(f"accuracy vs throughput ({ds})")
    ax.grid(True, which="both", alpha=0.3)


def ladder_panel(ax: Any, points: list[Point]) -> None:
    """Speed-up over torch fp32 eager against the paired episode delta (95% CI as error bars),
    every point labelled; filled: the gate passed. The band is the gate's tolerance on the CI."""
    tolerances = {p.tolerance for p in points if p.tolerance is not None}
    if len(tolerances) == 1:
        tol = tolerances.pop()
        ax.axvspan(-tol, tol, color="0.9", zorder=0, label=f"gate: CI within ±{tol:g} points")
        ax.legend(fontsize=7, loc="lower left")
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.axvline(0.0, color="0.6", lw=0.8)
    for i, p in enumerate(points):
        color = f"C{i % 10}"
        ax.errorbar(p.delta, p.speedup, xerr=p.ci95, fmt="none", ecolor=color, lw=1)
        ax.scatter(
            p.delta,
            p.speedup,
            marker=MARKERS.get(p.backend, "D"),
            facecolors=color if p.passed else "none",
            edgecolors=color,
            s=60,
        )
        ax.annotate(p.label, (p.delta, p.speedup), fontsize=6, xytext=(5, 3),
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel("paired episodes top-1 delta vs torch fp32 (points, 95% CI)")
    ax.set_ylabel("speed-up over torch fp32 eager (x)")
    ax.set_title("precision ladder: speed-up vs accuracy delta")
    ax.grid(True, alpha=0.3)


def plot(
    acc: dict[tuple[str, str], dict[str, Any]],
    setups: list[dict[str, Any]],
    parity: dict[tuple, dict[str, bool]],
    path: Path,
    points: list[Point] | None = None,
) -> bool:
    """Write the figure to ``path`` (PNG): one accuracy-vs-throughput panel per dataset with a
    method that has both numbers, then the ladder panel when ``points`` has any. Returns False
    (and writes nothing) when there is no panel to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({d for d, m in acc if any(s["method"] == m for s in setups)})
    panels = len(datasets) + bool(points)
    if not panels:
        return False
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.8), squeeze=False)
    try:
        for ax, ds in zip(axes[0], datasets, strict=False):
            accuracy_panel(ax, ds, acc, setups, parity)
        if points:
            ladder_panel(axes[0][-1], points)
        fig.text(
            0.01,
            0.01,
            "filled: parity PASS or reference; hollow: not passed / not run; "
            "o torch, s onnxruntime, ^ trt, + openvino",
            fontsize=7,
        )
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    finally:
        plt.close(fig)
    return True
