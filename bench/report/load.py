"""Reading the results tree: every ``.json`` below ``--results`` checked and sorted by kind, and
the accuracy, parity and fps documents gathered into rows (newest file per setup).

No file is skipped silently: a ``.json`` that cannot be read or parsed, or a results document of
a reported kind with missing or mistyped fields, comes back with the reason; results of other
kinds (training, search) are counted.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.report.identity import (
    dataset_label,
    device_label,
    machine_label,
    method_label,
    setup_key,
    setup_label,
)

KINDS = ("accuracy", "parity", "fps")


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
        ds = dataset_label(doc)
        per: dict[str, dict[str, Any]] = defaultdict(dict)
        described = doc.get("methods", {})
        for r in doc["results"]:
            mid = r.get("method_id", r["method"])  # two checkpoints of one method: two rows
            label = method_label(mid, described.get(mid))
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
            dataset_label(d),
        ),
    )
    out: dict[tuple, dict[str, bool]] = defaultdict(dict)
    for (method, key, ds), (_, doc) in by.items():
        if method is not None:
            out[(method, key)][ds] = bool(doc.get("passed"))
    return out


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
                "machine": machine_label(doc),
                "gpu": bool(doc.get("backend", {}).get("gpu")),
                "rows": {r["batch_size"]: r for r in doc["results"]},
                "best": best,
                "peak": doc.get("peak", {}),
                "load": doc.get("load_average", {}),
                "file": str(path),
            }
        )
    return out
