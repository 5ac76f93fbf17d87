"""``python -m bench.parity --method M --backend B --precision P``: does a backend match PyTorch?

Embeds the unseen-class test images with the reference (the method's module in PyTorch, fp32,
eager, TF32 off) and with the backend, then judges it by a gate with stated tolerances
(``imsim.parity.Tolerances``):
- tensor level (gate): per-sample cosine (min, mean); max / median / p99 absolute error reported;
- task level (gate): tie-aware top-1 nearest-neighbour agreement (a swap counts only when the
  reference's margin between the two neighbours exceeds what the precision can resolve,
  ``imsim.parity.tie_margin``) and the paired episode accuracy delta, both setups scored on the
  same episodes, whose 95% CI must lie within +-0.5 points;
- reported beside it: raw top-1 agreement, recall of the reference's top-1/5/10 neighbours,
  seed-protocol and retrieval (Recall@1/5, mAP@R) deltas.
Prints PASS/FAIL per check, writes the results JSON (``passed`` plus one record per check,
``gate`` saying which decide) and exits 1 when a gated check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from imsim.backends import Backend, create_backend, options_from_args
from imsim.cli import (
    add_backend_args,
    add_data_args,
    add_episode_args,
    add_method_args,
    add_one_method_args,
    add_tolerance_args,
    load_data_from_args,
    method_item,
    preflight,
    run,
    tolerance_overrides,
)
from imsim.data.types import Split
from imsim.errors import UserError
from imsim.methods import Embedder, embed_all, method_from_args, reference_runner
from imsim.parity import (
    Tolerances,
    at_least,
    neighbour_report,
    paired_delta,
    tensor_metrics,
    tolerances_for,
)
from imsim.protocols import Episodes, Retrieval, Seed, evaluate
from imsim.results import make_results, record, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.parity", description=__doc__.split("\n")[0])
    add_one_method_args(p)
    add_method_args(p)
    add_data_args(p)
    add_backend_args(p, required=True)
    add_episode_args(p, episodes_help="episodes for the accuracy delta")
    add_tolerance_args(
        p.add_argument_group("tolerances (defaults depend on --precision)"), reported=True
    )
    p.add_argument(
        "--out",
        default=None,
        help="results JSON (default: results/parity/ID-B-P.json, ID: method id)",
    )
    return p


def tolerances_from_args(args: argparse.Namespace) -> Tolerances:
    return dataclasses.replace(tolerances_for(args.precision), **tolerance_overrides(args))


def accuracies(
    method: Embedder, feats: np.ndarray, pool: Split, unseen: tuple[int, ...], class_names, cfg
) -> tuple[dict[tuple[str, str], float], np.ndarray]:
    """Seed-protocol top-k/top-1 and retrieval metrics of one set of pool features, and the
    per-episode top-1 accuracies (the same episodes for every setup of one pool; ``cfg``: the
    ``Episodes`` sampler's settings)."""
    scorer = method.scorer(feats, class_names)
    rows = evaluate(scorer, pool.labels, unseen, method.spec.name, (Seed(), Retrieval()))
    accs, _ = Episodes(**cfg).accuracies(scorer, pool.labels, unseen, class_names)
    return {(r["protocol"], r["metric"]): r["value"] for r in rows}, accs


def compare(
    method: Embedder,
    backend: Backend,
    reference: Backend,
    pool: Split,
    unseen: tuple[int, ...],
    class_names: list[str],
    tol: Tolerances,
    episode_cfg: dict,
    batch_size: int = 256,
) -> tuple[list[dict], bool]:
    """All checks of ``backend`` against ``reference`` (runners of ``method``'s network, e.g.
    ``reference_runner``) on ``pool``: (records, passed)."""
    ref = embed_all(reference, pool.images, "reference", batch_size)
    out = embed_all(backend, pool.images, backend.name, batch_size)
    tags = {
        "backend": backend.name,
        "precision": backend.precision,
        "device": backend.device,
        **backend.precision_tags(),
    }
    return judge(method, ref, out, tags, pool, unseen, class_names, tol, episode_cfg)


def judge(
    method: Embedder,
    ref: np.ndarray,
    out: np.ndarray,
    tags: dict,
    pool: Split,
    classes: tuple[int, ...],
    class_names: list[str],
    tol: Tolerances,
    episode_cfg: dict,
) -> tuple[list[dict], bool]:
    """The checks of ``compare`` on embeddings already computed (``ref``: the reference's, ``out``:
    the backend's, of ``pool``; ``tags["precision"]`` sets the tie margin), with ``classes`` as
    the episode classes: (records, passed). ``export --gate`` judges candidate graphs with it."""
    name = method.spec.name
    rows: list[dict] = []

    def check(
        protocol: str,
        metric: str,
        value: float,
        limit: float,
        op: str,
        gate: bool,
        judged: float | None = None,
        **extra,
    ) -> None:
        """One check; ``judged`` (default ``value``) is what the tolerance applies to."""
        v = value if judged is None else judged
        ok = at_least(v, limit) if op == ">=" else bool(abs(v) <= limit)  # NaN fails both
        rows.append(
            record(
                name,
                protocol,
                metric,
                value,
                **tags,
                tolerance=limit,
                op=op,
                passed=ok,
                gate=gate,
                **extra,
            )
        )

    t = tensor_metrics(ref, out)
    check("parity", "cosine_min", t["cosine_min"], tol.cos_min, ">=", True, level="tensor")
    check("parity", "cosine_mean", t["cosine_mean"], tol.cos_mean, ">=", True, level="tensor")
    for k in ("abs_max", "abs_median", "abs_p99"):
        rows.append(record(name, "parity", k, t[k], **tags, level="tensor"))
    nb = neighbour_report(ref, out, tags["precision"])
    swaps = {k: nb[k] for k in ("top1_swaps", "top1_swaps_tied", "tie_margin")}
    check(
        "parity",
        "top1_agreement_tie_aware",
        nb["top1_agreement_tie_aware"],
        tol.tie_aware_top1,
        ">=",
        True,
        level="task",
        **swaps,
    )
    check(
        "parity", "top1_agreement", nb["top1_agreement"], tol.top1_agreement, ">=", False,
        level="task",
    )  # fmt: skip
    check(
        "parity", "top5_overlap", nb["recall_ref_top5"], tol.top5_overlap, ">=", False,
        level="task",
    )  # fmt: skip
    for k in (1, 10):
        rows.append(record(name, "parity", f"recall_ref_top{k}", nb[f"recall_ref_top{k}"], **tags))
    acc_ref, eps_ref = accuracies(method, ref, pool, classes, class_names, episode_cfg)
    acc_out, eps_out = accuracies(method, out, pool, classes, class_names, episode_cfg)
    for (protocol, metric), r in acc_ref.items():
        delta = 100.0 * (acc_out[(protocol, metric)] - r)
        extra = {"reference": r, "backend_value": acc_out[(protocol, metric)], "level": "task"}
        if protocol == "seed":
            check(protocol, f"{metric}_delta_points", delta, tol.acc_delta_points, "abs<=", False,
                  **extra)  # fmt: skip
        else:
            rows.append(record(name, protocol, f"{metric}_delta_points", delta, **tags, **extra))
    mean, ci = paired_delta(eps_ref, eps_out)
    check(
        "episodes",
        "top1_delta_points",
        mean,
        tol.episode_delta_ci_points,
        "ci within +-",
        True,
        judged=abs(mean) + ci,  # the whole paired 95% CI must lie within the tolerance
        level="task",
        ci95=ci,
        reference=float(eps_ref.mean()),
        backend_value=float(eps_out.mean()),
        paired_episodes=len(eps_ref),
    )
    mid = method.method_id
    rows = [{"method": r["method"], "method_id": mid, **r} for r in rows]
    return rows, all(r["passed"] for r in rows if r.get("gate"))


def format_table(rows: list[dict]) -> str:
    lines = ["| check | value | tolerance | result |", "|---|---|---|---|"]
    for r in rows:
        metric = r["metric"] if r["protocol"] == "parity" else f"{r['protocol']} {r['metric']}"
        v = r["value"]
        if metric.startswith("cosine"):
            value = f"{v:.7f}"
        elif r["metric"].startswith(("top1_agreement", "top5_overlap")):
            value = f"{v:.4f}"
        else:
            value = f"{v:.4g}"
        if "ci95" in r and r["protocol"] == "episodes":
            value += f" ± {r['ci95']:.3g}"
        if "passed" in r:
            op = {">=": ">=", "abs<=": "abs <="}.get(r["op"], r["op"])
            verdict = "PASS" if r["passed"] else "FAIL"
            lines.append(
                f"| {metric} | {value} | {op} {r['tolerance']} | "
                f"{verdict if r.get('gate', True) else f'({verdict.lower()}, not gated)'} |"
            )
        else:
            lines.append(f"| {metric} | {value} | (reported) | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preflight(
        args,
        files={"--out": args.out},
        dirs={"--out (default)": None if args.out else "results/parity"},
    )
    tol = tolerances_from_args(args)
    method = method_from_args(method_item(args.method, args.checkpoint), args)
    name = method.spec.name
    module = method.as_module()
    if module is None:
        raise UserError(f"method {name!r} is not a single network; there is no backend to compare")
    backend = create_backend(args.backend, method, options_from_args(args))
    ds = load_data_from_args(args)
    if method.spec.fits_on_seen:
        method.fit(ds.train.subset(ds.split.seen), ds.class_names)
    pool = ds.test.subset(ds.split.unseen)
    reference = reference_runner(module, args.device)  # what the method's own embed runs on
    print(
        f"{name}: {backend.name} {backend.precision_tags()['precision_label']} on {backend.device} "
        "vs PyTorch fp32 eager "
        f"on {reference.device}, {len(pool)} unseen-class test images of {ds.name}",
        file=sys.stderr,
    )
    cfg = {k: getattr(args, k) for k in ("episodes", "ways", "shots", "queries", "seed")}
    rows, passed = compare(
        method,
        backend,
        reference,
        pool,
        ds.split.unseen,
        ds.class_names,
        tol,
        cfg,
        args.batch_size,
    )
    print(format_table(rows))
    label = backend.precision_tags()["precision_label"]
    print(f"{name} {backend.name} {label}: {'PASS' if passed else 'FAIL'}")
    out = args.out or f"results/parity/{method.method_id}-{args.backend}-{args.precision}.json"
    doc = make_results(
        "parity",
        rows,
        config=vars(args),
        passed=passed,
        tolerances=tol.to_dict(),
        dataset={"name": ds.name, "info": ds.info, "n_images": len(pool)},
        method_id=method.method_id,
        method=method.describe(),
        backend=backend.describe(),
        reference=reference.describe(),
        seeds={"episodes": args.seed, "data": args.data_seed},
    )
    print(f"wrote {write_json_atomic(out, doc)}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    run(main)
