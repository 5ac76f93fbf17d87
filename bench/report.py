"""``python -m bench.report``: one comparison of every method from the results under ``results/``.

Reads the accuracy, parity and fps JSON files (``imsim.results`` schema, any depth below
``--results``) and writes ``results/REPORT.md``: accuracy with confidence intervals per protocol
and dataset, throughput per backend, precision and device with the parity status of that exact
setup, and an accuracy-vs-throughput plot (PNG). Where one setup was measured more than once, the
newest file wins. Nothing is measured here: every number comes from a file, which is listed.

No file is skipped silently: a ``.json`` that cannot be read or parsed, or a results document of
a reported kind with missing or mistyped fields, is named with the reason on stderr and in the
report's "Files not used" section; results of other kinds (training, search) are counted there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from imsim.cli import preflight, run
from imsim.errors import UserError

KINDS = ("accuracy", "parity", "fps")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n")[0])
    p.add_argument("--results", default="results", help="folder searched for results JSON")
    p.add_argument("--out", default=None, help="Markdown report (default: RESULTS/REPORT.md)")
    p.add_argument("--plot", default=None, help="PNG plot (default: RESULTS/report.png)")
    p.add_argument(
        "--target-batch",
        action="append",
        default=[],
        metavar="METHOD=BATCH",
        help="also show images/s at this batch size for a method (repeatable), "
        "e.g. clip[random-weights]=32",
    )
    return p


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _record_problem(kind: str, i: int, r: Any) -> str | None:
    """What a results record lacks for the report (``results[i]``), or None."""
    if not isinstance(r, dict) or not isinstance(r.get("method"), str):
        return f"results[{i}] is not a record with a method name"
    if kind == "accuracy":
        if not (isinstance(r.get("protocol"), str) and isinstance(r.get("metric"), str)):
            return f"results[{i}] needs protocol and metric strings"
        if not _number(r.get("value")) or ("ci95" in r and not _number(r["ci95"])):
            return f"results[{i}] needs a finite number value (and ci95)"
    if kind == "fps":
        if isinstance(r.get("batch_size"), bool) or not isinstance(r.get("batch_size"), int):
            return f"results[{i}] needs an integer batch_size"
        if r.get("status") == "ok" and not (
            _number(r.get("images_per_s"))
            and _number(r.get("p50_ms"))
            and isinstance(r.get("model_only"), dict)
            and _number(r["model_only"].get("images_per_s"))
        ):
            return f"results[{i}] has status ok without images_per_s, p50_ms or model_only"
    return None


def document_problem(doc: dict) -> str | None:
    """Why a results document of a reported kind cannot be used, or None."""
    if not isinstance(doc.get("results"), list):
        return "it has no results list"
    for key in ("config", "dataset", "methods", "method", "backend", "env", "peak"):
        if key in doc and not isinstance(doc[key], dict | type(None)):
            return f"its {key} is not an object"
    if doc["kind"] in ("parity", "fps") and not doc["results"]:
        return "its results list is empty"
    for i, r in enumerate(doc["results"]):
        problem = _record_problem(doc["kind"], i, r)
        if problem:
            return problem
    return None


def load_documents(
    root: Path,
) -> tuple[dict[str, list[tuple[Path, dict]]], list[tuple[Path, str]], Counter]:
    """Results documents by kind, the files skipped with the reason, and how many results files
    of other kinds (not part of this report) there are."""
    docs: dict[str, list[tuple[Path, dict]]] = defaultdict(list)
    skipped: list[tuple[Path, str]] = []
    other: Counter = Counter()
    for path in sorted(root.rglob("*.json")):
        try:
            doc = json.loads(path.read_bytes())
        except OSError as e:
            skipped.append((path, f"unreadable ({e.strerror or e})"))
            continue
        except (ValueError, RecursionError) as e:  # bad syntax or encoding, absurd nesting
            skipped.append((path, f"not valid JSON ({' '.join(str(e).split())[:120]})"))
            continue
        if not isinstance(doc, dict) or doc.get("kind") not in KINDS:
            if isinstance(doc, dict) and "schema" in doc and "kind" in doc:
                other[str(doc["kind"])] += 1  # a results file of another kind
            continue
        problem = document_problem(doc)
        if problem:
            skipped.append((path, f"a results file of kind {doc['kind']}, but {problem}"))
            continue
        docs[doc["kind"]].append((path, doc))
    return docs, skipped, other


def skipped_section(skipped: list[tuple[Path, str]], other: Counter) -> list[str]:
    """The report's account of every file it did not use."""
    lines = [f"- `{path}`: skipped, {reason}" for path, reason in skipped]
    if other:
        kinds = ", ".join(f"{k} ({n})" for k, n in sorted(other.items()))
        lines.append(f"- {sum(other.values())} results files of kinds not reported here: {kinds}")
    return lines or ["None: every JSON file found was used or is not a results file."]


def model_label(describe: dict[str, Any] | None) -> str | None:
    """The network and recipe behind a method instance, from its ``describe()``: ``ResNet-56``,
    ``ViT-B-32``, ``ResNet-20, seed recipe``.

    Part of the method's name in the report, so a ResNet-20 checkpoint's accuracy is never shown
    beside a ResNet-56's speed, nor one CLIP model's or recipe's beside another's.
    """
    if not describe:
        return None
    parts = []
    arch = describe.get("arch")
    if isinstance(arch, dict) and arch.get("name"):
        if arch["name"] == "resnet_cifar" and arch.get("depth"):
            parts.append(f"ResNet-{arch['depth']}")
        elif arch["name"] == "vit_cifar":
            parts.append(f"ViT-{arch.get('size', '?')}")
        else:
            parts.append(str(arch["name"]))
    elif describe.get("clip_model"):
        parts.append(str(describe["clip_model"]))
    recipe = describe.get("recipe")
    recipe = recipe.get("name") if isinstance(recipe, dict) else recipe
    if recipe and recipe != "default":
        parts.append(f"{recipe} recipe")
    return ", ".join(parts) or None


def method_label(name: str, describe: dict[str, Any] | None) -> str:
    model = model_label(describe)
    return f"{name} ({model})" if model and model != name else name


def setup_key(backend: dict[str, Any]) -> tuple:
    """What makes two runs of a backend the same setup (a parity result speaks for an fps run
    only when this matches)."""
    name = backend.get("backend")
    key: tuple = (name, backend.get("precision"), backend.get("device"))
    if name == "torch":
        key += (bool(backend.get("compile")), bool(backend.get("channels_last")))
    elif name == "onnxruntime":
        key += (backend.get("provider"), backend.get("graph_optimization"))
    return key


def setup_label(backend: dict[str, Any]) -> str:
    """Backend, precision and the options that change speed, e.g. ``torch bf16 compile``."""
    precision = backend.get("precision_label") or backend.get("precision", "?")
    parts = [backend.get("backend", "?"), precision]
    if backend.get("backend") == "torch":
        parts += ["compile"] if backend.get("compile") else []
        parts += [] if backend.get("channels_last", True) else ["NCHW"]
    if backend.get("backend") == "onnxruntime":
        provider = str(backend.get("provider", ""))
        if provider and provider != "CPUExecutionProvider":
            parts.append(provider.removesuffix("ExecutionProvider"))
        parts.append(f"opt {backend.get('graph_optimization')}")
    if backend.get("threads"):
        parts.append(f"{backend['threads']} threads")
    return " ".join(parts)


def device_label(doc: dict) -> str:
    gpu = doc.get("backend", {}).get("gpu")
    if gpu:
        return gpu
    env = doc.get("env", {})
    # Two CPUs with one model name ("AMD EPYC") can differ in what they run natively: name the
    # kernel level and native precisions when the file records them (imsim.hardware).
    caps = env.get("hardware", {}).get("cpu")
    kind = f"{caps.get('isa')}, native {'/'.join(caps.get('native', []))}, " if caps else ""
    return f"CPU {env.get('cpu', '?')} ({kind}{env.get('torch_threads', '?')} threads)"


def newest(items: list[tuple[Path, dict]], key) -> dict[Any, tuple[Path, dict]]:
    out: dict[Any, tuple[Path, dict]] = {}
    for path, doc in items:
        k = key(doc)
        if k is not None and (
            k not in out or doc.get("created", "") >= out[k][1].get("created", "")
        ):
            out[k] = (path, doc)
    return out


def accuracy_rows(items: list[tuple[Path, dict]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(dataset, method) -> {protocol/metric: record, "file": path}, newest file per pair; runs
    through a backend (``--backend``) are left to the parity table."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    stamp: dict[tuple[str, str], str] = {}
    for path, doc in items:
        if doc.get("config", {}).get("backend"):
            continue
        ds = doc.get("dataset", {}).get("name", "?")
        per: dict[str, dict[str, Any]] = defaultdict(dict)
        described = doc.get("methods", {})
        for r in doc["results"]:
            label = method_label(r["method"], described.get(r["method"]))
            per[label][f"{r['protocol']}/{r['metric']}"] = r
        for method, metrics in per.items():
            k = (ds, method)
            if k not in out or doc.get("created", "") >= stamp[k]:
                out[k] = {**metrics, "file": str(path)}
                stamp[k] = doc.get("created", "")
    return out


def parity_status(items: list[tuple[Path, dict]]) -> dict[tuple, dict[str, bool]]:
    """(method, setup key) -> {dataset: passed}, newest file per dataset."""
    by = newest(
        items,
        lambda d: (
            method_label(d["results"][0]["method"], d.get("method")) if d["results"] else None,
            setup_key(d.get("backend", {})),
            d.get("dataset", {}).get("name"),
        ),
    )
    out: dict[tuple, dict[str, bool]] = defaultdict(dict)
    for (method, key, ds), (_, doc) in by.items():
        if method is not None:
            out[(method, key)][ds] = bool(doc.get("passed"))
    return out


def parity_text(status: dict[str, bool] | None, backend: dict[str, Any]) -> str:
    if (backend.get("backend"), backend.get("precision")) == ("torch", "fp32") and not (
        backend.get("compile") or backend.get("channels_last")
    ):
        return "reference"  # bench.parity's reference: PyTorch fp32 eager, NCHW
    if not status:
        return "not run"
    return ", ".join(f"{'PASS' if ok else 'FAIL'} ({ds})" for ds, ok in sorted(status.items()))


def fps_setups(items: list[tuple[Path, dict]]) -> list[dict[str, Any]]:
    """One entry per (method, setup, device): the newest fps file's records."""
    by = newest(
        items,
        lambda d: (
            method_label(d["results"][0]["method"], d.get("method")) if d["results"] else None,
            setup_key(d.get("backend", {})),
            device_label(d),
        ),
    )
    out = []
    for (method, key, device), (path, doc) in sorted(by.items(), key=lambda kv: str(kv[0])):
        ok = [r for r in doc["results"] if r.get("status") == "ok"]
        best = max(ok, key=lambda r: r["images_per_s"]) if ok else None
        out.append(
            {
                "method": method,
                "key": key,
                "backend": doc.get("backend", {}),
                "label": setup_label(doc.get("backend", {})),
                "device": device,
                "gpu": bool(doc.get("backend", {}).get("gpu")),
                "rows": {r["batch_size"]: r for r in doc["results"]},
                "best": best,
                "peak": doc.get("peak", {}),
                "load": doc.get("load_average", {}),
                "file": str(path),
            }
        )
    return out


def _pct(r: dict | None, key: str, scale: float = 100.0, digits: int = 2) -> str:
    if not r or key not in r:
        return ""
    v = r[key]["value"] if isinstance(r[key], dict) else r[key]
    return f"{scale * v:.{digits}f}"


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


def plot(
    acc: dict[tuple[str, str], dict[str, Any]],
    setups: list[dict[str, Any]],
    parity: dict[tuple, dict[str, bool]],
    path: Path,
) -> bool:
    """Episodes top-1 against the best images/s of each measured setup, one panel per dataset.

    Hollow markers: parity not passed (or not run) for that setup. Returns False when no method
    has both numbers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({d for d, m in acc if any(s["method"] == m for s in setups)})
    if not datasets:
        return False
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.8), squeeze=False)
    markers = {"torch": "o", "onnxruntime": "s", "trt": "^", "openvino": "P"}
    for ax, ds in zip(axes[0], datasets, strict=True):
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
                marker=markers.get(s["backend"].get("backend"), "D"),
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
    fig.text(
        0.01,
        0.01,
        "filled: parity PASS or reference; hollow: not passed / not run; "
        "o torch, s onnxruntime, ^ trt, + openvino",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)
    return True


def parse_targets(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        method, _, batch = item.rpartition("=")
        if not method or not batch.isdigit():
            raise UserError(f"--target-batch wants METHOD=BATCH, got {item!r}")
        out[method] = int(batch)
    return out


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


def build_report(root: Path, targets: dict[str, int], plot_path: Path | None) -> str:
    docs, skipped, other = load_documents(root)
    for path, reason in skipped:
        print(f"warning: {path}: skipped, {reason}", file=sys.stderr)
    if not any(docs.values()):
        hint = f" ({len(skipped)} skipped, see above)" if skipped else ""
        raise UserError(f"no accuracy, parity or fps results JSON under {root}{hint}")
    acc = accuracy_rows(docs["accuracy"])
    parity = parity_status(docs["parity"])
    setups = fps_setups(docs["fps"])
    lines = [
        "# imsim: accuracy, throughput and parity",
        "",
        f"Generated by `python -m bench.report --results {root}` from "
        f"{sum(len(v) for v in docs.values())} results files ({len(docs['accuracy'])} accuracy, "
        f"{len(docs['parity'])} parity, {len(docs['fps'])} fps). Throughput is end to end "
        "(uint8 host images in, float32 embeddings on the host out), median step time; model-only "
        "runs the network on inputs already on the device. Parity: the same backend setup checked "
        "against PyTorch fp32 (`python -m bench.parity`) on the named data.",
        "",
        "## Comparison",
        "",
        *comparison_section(acc, setups, parity),
        "",
    ]
    if plot_path is not None and plot(acc, setups, parity, plot_path):
        rel = plot_path.relative_to(root) if plot_path.is_relative_to(root) else plot_path
        lines += [f"![accuracy vs throughput]({rel})", ""]
    lines += ["## Accuracy on unseen classes", "", *accuracy_section(acc)]
    lines += ["## Throughput", "", *throughput_section(setups, parity, targets), ""]
    if setups and not any(s["gpu"] for s in setups):
        lines += ["No GPU results: the GPU rows were not run.", ""]
    lines += ["## Where the throughput numbers come from", "", *environment_lines(setups), ""]
    lines += ["## Files not used", "", *skipped_section(skipped, other), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preflight(args, files={"--out": args.out, "--plot": args.plot}, method_args=False)
    root = Path(args.results)
    if not root.is_dir():
        raise UserError(f"results folder {root} not found")
    out = Path(args.out) if args.out else root / "REPORT.md"
    plot_path = Path(args.plot) if args.plot else root / "report.png"
    text = build_report(root, parse_targets(args.target_batch), plot_path)
    write_text_atomic(out, text)
    print(text)
    print(f"wrote {out} and {plot_path}", file=sys.stderr)
    return 0


def write_text_atomic(path: Path, text: str) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    run(main)
