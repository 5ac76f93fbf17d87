"""``python -m bench.accuracy``: accuracy of each method on the unseen classes, per protocol.

Embeds the unseen-class test images once per method, runs the chosen protocols on them, prints a
Markdown table in the spirit of the reference study's (method, accuracy, chance) and writes the
results JSON.
"""

from __future__ import annotations

import argparse
import sys
import time

from imsim.backends import create_backend, options_from_args
from imsim.cli import (
    add_backend_args,
    add_data_args,
    add_episode_args,
    add_method_args,
    csv_list,
    load_data_from_args,
    preflight,
    run,
)
from imsim.errors import UserError
from imsim.methods import (
    check_method_flags,
    distinct_ids,
    embed_all,
    list_methods,
    method_from_args,
    parse_methods,
)
from imsim.protocols import PROTOCOLS, build_protocols, evaluate
from imsim.results import make_results, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n")[0])
    add_data_args(p)
    add_method_args(p)
    add_backend_args(p)
    names = ", ".join(list_methods())
    p.add_argument(
        "--methods",
        default="all",
        help=f"comma-separated, or all; known: {names}; "
        "NAME:ARG passes ARG (e.g. a checkpoint path)",
    )
    p.add_argument(
        "--protocol",
        default="seed,episodes,retrieval",
        help=f"comma-separated subset of {','.join(PROTOCOLS)}",
    )
    add_episode_args(p)
    p.add_argument("--out", default="results/accuracy.json", help="results JSON path")
    return p


def format_table(rows: list[dict]) -> str:
    lines = [
        "| method | protocol | metric | accuracy (%) | 95% CI | chance (%) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = f"± {100 * r['ci95']:.2f}" if "ci95" in r else ""
        if "ci95_low" in r:
            ci = f"{100 * r['ci95_low']:.2f}-{100 * r['ci95_high']:.2f}"
        ch = f"{100 * r['chance']:.1f}" if "chance" in r else ""
        lines.append(
            f"| {r.get('method_id', r['method'])} | {r['protocol']} | {r['metric']} | "
            f"{100 * r['value']:.2f} | {ci} | {ch} |"
        )
    return "\n".join(lines)


def identify(
    found: list[tuple[str, str | None, list[dict], dict]],
) -> tuple[list[dict], dict[str, dict]]:
    """Rows tagged with their method instance's id (made distinct, ``distinct_ids``: two
    checkpoints of one method are two rows), and the ``methods`` section keyed by that id."""
    ids = distinct_ids([f[0] for f in found], [f[1] for f in found])
    rows: list[dict] = []
    for mid, (_, _, got, _) in zip(ids, found, strict=True):
        rows += [{"method": r["method"], "method_id": mid, **r} for r in got]
    return rows, {mid: f[3] for mid, f in zip(ids, found, strict=True)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preflight(args, files={"--out": args.out})
    protocols = build_protocols(
        csv_list(args.protocol),
        ways=args.ways,
        shots=args.shots,
        queries=args.queries,
        episodes=args.episodes,
        seed=args.seed,
    )
    methods = parse_methods(args.methods, **vars(args))
    check_method_flags(methods, args)
    ds = load_data_from_args(args)
    pool = ds.test.subset(ds.split.unseen)
    unseen = ds.split.unseen
    print(
        f"{ds.name}: {len(ds.class_names)} classes, evaluating {len(unseen)} unseen "
        f"({', '.join(ds.class_names[c] for c in unseen)}) on {len(pool)} test images",
        file=sys.stderr,
    )

    found: list[tuple[str, str | None, list[dict], dict]] = []  # id, weights hash, rows, describe
    for item in methods:
        method = method_from_args(item, args, items=methods)
        backend = None
        if args.backend:  # the backend replaces the method's runner (torch fp32 by default)
            backend = create_backend(args.backend, method, options_from_args(args))
            method.use_backend(backend)
        name = method.spec.name
        leaked = sorted(method.trained_classes() & {ds.class_names[c] for c in unseen})
        if leaked:
            raise UserError(
                f"{item} was trained on {', '.join(leaked)}, which this evaluation treats as "
                "unseen; evaluate on the checkpoint's own split or retrain without them"
            )
        if method.spec.fits_on_seen:
            method.fit(ds.train.subset(ds.split.seen), ds.class_names)
        t0 = time.perf_counter()
        feats = embed_all(method, pool.images, desc=f"embed {name}", batch_size=args.batch_size)
        described = {**method.describe(), "embed_seconds": time.perf_counter() - t0}
        if backend is not None:
            described["backend"] = backend.describe()
        scorer = method.scorer(feats, ds.class_names)
        got = evaluate(scorer, pool.labels, unseen, name, protocols, ds.class_names)
        found.append((method.method_id, method.weights_sha256(), got, described))
    rows, methods_doc = identify(found)

    print(format_table(rows))
    notes = []
    for r in rows:
        if r["protocol"] == "seed" and r["k"] > 1:
            notes.append(
                f"seed protocol: a hit is the true class among the {r['k']} nearest of "
                f"{r.get('n_candidates', r['n_classes'])} {r['ranks']}; "
                f"chance {100 * r['chance']:.1f}%"
            )
            if r["n_classes"] != 10:
                notes.append(
                    f"(the study used 5 of 10; with {r['n_classes']} unseen classes "
                    f"k = {r['k']} keeps its half-of-the-classes rule)"
                )
    for n in dict.fromkeys(notes):
        print(n)
    doc = make_results(
        "accuracy",
        rows,
        config=vars(args),
        dataset={"name": ds.name, "info": ds.info, "n_classes": len(ds.class_names)},
        split={
            "seen": [ds.class_names[c] for c in ds.split.seen],
            "unseen": [ds.class_names[c] for c in unseen],
        },
        seeds={"episodes": args.seed, "data": args.data_seed},
        methods=methods_doc,
    )
    print(f"wrote {write_json_atomic(args.out, doc)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
