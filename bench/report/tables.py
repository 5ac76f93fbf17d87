"""The report's Markdown sections: comparison, accuracy, throughput with parity status, where the
numbers come from and the files not used."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any


def skipped_section(skipped: list[tuple[Path, str]], other: Counter) -> list[str]:
    """The report's account of every file it did not use."""
    lines = [f"- `{path}`: skipped, {reason}" for path, reason in skipped]
    if other:
        kinds = ", ".join(f"{k} ({n})" for k, n in sorted(other.items()))
        lines.append(f"- {sum(other.values())} results files of kinds not reported here: {kinds}")
    return lines or ["None: every JSON file found was used or is not a results file."]


def parity_text(status: dict[str, bool] | None, backend: dict[str, Any]) -> str:
    if (backend.get("backend"), backend.get("precision")) == ("torch", "fp32") and not (
        backend.get("compile") or backend.get("channels_last")
    ):
        return "reference"  # bench.parity's reference: PyTorch fp32 eager, NCHW
    if not status:
        return "not run"
    return ", ".join(f"{'PASS' if ok else 'FAIL'} ({ds})" for ds, ok in sorted(status.items()))


def _acc_cell(m: dict[str, Any], key: str) -> str:
    r = m.get(key)
    if not r:
        return ""
    ci = f" ± {100 * r['ci95']:.2f}" if "ci95" in r else ""
    return f"{100 * r['value']:.2f}{ci}"


def accuracy_section(acc: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for ds in sorted({d for d, _ in acc}):
        lines += [
            f"### {ds}",
            "",
            "| method | seed top-k | seed top-1 | episodes top-1 (95% CI) | retrieval R@1 | "
            "mAP@R |",
            "|---|---|---|---|---|---|",
        ]
        for (d, method), m in sorted(acc.items()):
            if d != ds:
                continue
            topk = next(
                (v for k, v in m.items() if k.startswith("seed/top") and k != "seed/top1"), None
            )
            topk_cell = ""
            if topk:
                topk_cell = f"{100 * topk['value']:.2f} (top-{topk.get('k', '?')})"
            lines.append(
                f"| {method} | {topk_cell} | {_acc_cell(m, 'seed/top1')} | "
                f"{_acc_cell(m, 'episodes/top1')} | {_acc_cell(m, 'retrieval/recall@1')} | "
                f"{_acc_cell(m, 'retrieval/map@r')} |"
            )
        lines.append("")
    return lines


def throughput_section(
    setups: list[dict[str, Any]], parity: dict[tuple, dict[str, bool]], targets: dict[str, int]
) -> list[str]:
    lines = [
        "| method | backend setup | device | batch 1 p50 ms | best images/s (batch) | "
        "model-only images/s (batch) | at target batch | model-only GFLOP/s (% of peak) | "
        "parity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in setups:
        rows, best = s["rows"], s["best"]
        ok = [r for r in rows.values() if r.get("status") == "ok"]
        b1 = rows.get(1) if rows.get(1, {}).get("status") == "ok" else None
        b1_cell = f"{b1['p50_ms']:.2f}" if b1 else ""
        best_cell = f"{best['images_per_s']:.1f} ({best['batch_size']})" if best else "none"
        oom = sorted(r["batch_size"] for r in rows.values() if r.get("status") == "oom")
        if oom:
            best_cell += f"; OOM at {', '.join(map(str, oom))}"
        model_cell = gf_cell = at_cell = ""
        if ok:
            mb = max(ok, key=lambda r: r["model_only"]["images_per_s"])
            mo = mb["model_only"]
            model_cell = f"{mo['images_per_s']:.1f} ({mb['batch_size']})"
            if "gflops_per_s" in mo:
                frac = f" ({100 * mo['peak_fraction']:.0f}%)" if "peak_fraction" in mo else ""
                gf_cell = f"{mo['gflops_per_s']:.0f}{frac}"
        target = targets.get(s["method"])
        at = rows.get(target) if target else None
        if at and at.get("status") == "ok":
            at_cell = f"{at['images_per_s']:.1f} (batch {target})"
        status = parity_text(parity.get((s["method"], s["key"])), s["backend"])
        lines.append(
            f"| {s['method']} | {s['label']} | {s['device']} | {b1_cell} | {best_cell} | "
            f"{model_cell} | {at_cell} | {gf_cell} | {status} |"
        )
    return lines


def best_passing(
    setups: list[dict[str, Any]], parity: dict[tuple, dict[str, bool]], method: str, gpu: bool
) -> dict[str, Any] | None:
    """The fastest setup of a method on CPU (or GPU) whose parity passed (or is the reference)."""
    good = []
    for s in setups:
        if s["method"] != method or s["gpu"] != gpu or not s["best"]:
            continue
        text = parity_text(parity.get((method, s["key"])), s["backend"])
        if text == "reference" or ("PASS" in text and "FAIL" not in text):
            good.append(s)
    return max(good, key=lambda s: s["best"]["images_per_s"], default=None)


def comparison_section(
    acc: dict[tuple[str, str], dict[str, Any]],
    setups: list[dict[str, Any]],
    parity: dict[tuple, dict[str, bool]],
) -> list[str]:
    datasets = sorted({d for d, _ in acc})
    methods = sorted({m for _, m in acc} | {s["method"] for s in setups})
    head = ["method"] + [f"episodes top-1, {d} (%)" for d in datasets]
    head += ["best CPU setup passing parity", "CPU images/s (batch)", "GPU images/s (batch)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [m] + [_acc_cell(acc.get((d, m), {}), "episodes/top1") for d in datasets]
        cpu = best_passing(setups, parity, m, gpu=False)
        gpu = best_passing(setups, parity, m, gpu=True)
        cells.append(cpu["label"] if cpu else "")
        cells.append(
            f"{cpu['best']['images_per_s']:.1f} ({cpu['best']['batch_size']})" if cpu else ""
        )
        cells.append(
            f"{gpu['best']['images_per_s']:.1f} ({gpu['best']['batch_size']}, {gpu['device']})"
            if gpu
            else ("not run (no GPU)" if any(s["method"] == m for s in setups) else "")
        )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def environment_lines(setups: list[dict[str, Any]]) -> list[str]:
    lines = []
    for s in setups:
        load = s["load"] or {}
        peak = s["peak"] or {}
        lines.append(
            f"- `{s['file']}`: {s['method']}, {s['label']}, {s['device']}; "
            f"{peak.get('dtype', '?')} matmul peak {peak.get('gflops_per_s', 0):.0f} GFLOP/s; "
            f"load average start {load.get('start')}, end {load.get('end')}"
        )
    return lines
