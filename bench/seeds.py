"""``python -m bench.seeds``: accuracy over training seeds, with a CI that covers them.

An accuracy file scores each checkpoint on one draw of episodes; its CI says how much that draw
could move the number, not how much retraining with another seed would. This command groups the
rows of one or more ``bench.accuracy`` files by method configuration (everything a checkpoint
records except its seed, weights and selected epoch) and reports, per protocol and metric:

- ``mean`` over the S seeds and their standard deviation ``seed_sd``;
- ``ci95``: the half-width of a 95% interval for the expected accuracy of the recipe, combining
  the seed-to-seed spread, ``t(0.975, S - 1) * seed_sd / sqrt(S)``, with the sampling CI that all
  seeds share (the same episodes and queries score every seed, so their sampling error does not
  average out): ``sqrt(seed_part^2 + sampling^2)``, where ``sampling`` is the mean of the
  per-seed sampling half-widths (episodes: 1.96 standard errors; seed protocol: half the Wilson
  interval; retrieval: none).
Untrained methods form groups of one (S = 1): their CI is the sampling CI alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from imsim.cli import preflight, run
from imsim.errors import UserError
from imsim.results import make_results, write_json_atomic

# Fields of a method's description that differ between seeds of one configuration.
PER_SEED = ("seed", "checkpoint", "weights_sha256", "validation", "epoch", "embed_seconds", "id")


def sampling_half_width(row: dict[str, Any]) -> float | None:
    """The row's own 95% half-width (None where the protocol gives none: retrieval)."""
    if "ci95" in row and row["ci95"] == row["ci95"]:
        return float(row["ci95"])
    if "ci95_low" in row:
        return (float(row["ci95_high"]) - float(row["ci95_low"])) / 2
    return None


def combine(values: list[float], sampling: list[float | None]) -> dict[str, Any]:
    """Mean, seed spread and the combined 95% half-width of per-seed ``values`` (None when
    there is neither a seed spread nor a sampling CI: one seed of a retrieval metric)."""
    v = np.asarray(values, dtype=np.float64)
    s = len(v)
    sd = float(v.std(ddof=1)) if s > 1 else 0.0
    seed_part = float(stats.t.ppf(0.975, s - 1) * sd / math.sqrt(s)) if s > 1 else 0.0
    known = [x for x in sampling if x is not None]
    samp = float(np.mean(known)) if known else 0.0
    ci = math.hypot(seed_part, samp) if (s > 1 or known) else None
    return {
        "mean": float(v.mean()),
        "ci95": ci,
        "n_seeds": s,
        "seed_sd": sd,
        "seed_ci95": seed_part,
        "sampling_ci95": samp,
        "values": [float(x) for x in v],
    }


def configuration(describe: dict[str, Any] | None, name: str) -> str:
    """A stable key for a method configuration: its description without per-seed fields."""
    if not describe:
        return name
    keep = {k: v for k, v in describe.items() if k not in PER_SEED}
    return json.dumps(keep, sort_keys=True, default=str)


def label(describe: dict[str, Any] | None, name: str) -> str:
    """A short human name: method, backbone and recipe for trained methods."""
    if not describe or "arch" not in describe:
        return name
    arch = describe.get("arch") or {}
    net = arch.get("name", "")
    if net == "resnet_cifar":
        net = f"ResNet-{arch.get('depth')}"
    elif net == "vit_cifar":
        net = f"ViT-{arch.get('size', '')}"
    recipe = describe.get("recipe") or {}
    extra = []
    if recipe.get("augment", "crop+flip") != "crop+flip":
        extra.append(recipe["augment"])
    ssl = (recipe.get("loss") or {}).get("ssl")
    if ssl:
        extra.append(f"ssl {ssl['weight']:g}")
    parts = [net] if net and net != name else []
    parts += [f"{recipe.get('name', '?')} recipe", *extra]
    return f"{name} ({', '.join(parts)})"


def summarize(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group every row of ``docs`` by (configuration, protocol, metric) and combine the seeds."""
    groups: dict[tuple, dict[str, Any]] = {}
    for doc in docs:
        described = doc.get("methods") or {}
        for row in doc.get("results") or []:
            key_name = row.get("method_id", row["method"])
            desc = described.get(key_name)
            cfg = configuration(desc, row["method"])
            k = (cfg, row["protocol"], row["metric"])
            g = groups.setdefault(
                k,
                {
                    "method": label(desc, row["method"]),
                    "protocol": row["protocol"],
                    "metric": row["metric"],
                    "chance": row.get("chance"),
                    "values": [],
                    "sampling": [],
                    "members": [],
                },
            )
            if key_name in g["members"]:  # one method scored in two files: must agree
                if float(row["value"]) != g["values"][g["members"].index(key_name)]:
                    raise UserError(
                        f"{key_name} has two different {row['protocol']} {row['metric']} values "
                        "in these files; were they made on different data?"
                    )
                continue
            g["members"].append(key_name)
            g["values"].append(float(row["value"]))
            g["sampling"].append(sampling_half_width(row))
    out = []
    for g in groups.values():
        stats_ = combine(g.pop("values"), g.pop("sampling"))
        out.append({**g, **stats_})
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | protocol | metric | mean (%) | 95% CI | seeds | seed sd | chance (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ch = f"{100 * r['chance']:.1f}" if r.get("chance") is not None else ""
        ci = f"± {100 * r['ci95']:.2f}" if r["ci95"] is not None else ""
        lines.append(
            f"| {r['method']} | {r['protocol']} | {r['metric']} | {100 * r['mean']:.2f} | "
            f"{ci} | {r['n_seeds']} | {100 * r['seed_sd']:.2f} | {ch} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.seeds", description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", help="bench.accuracy results JSON files")
    p.add_argument("--out", required=True, help="summary JSON path")
    args = p.parse_args(argv)
    preflight(args, files={"--out": args.out})
    docs = []
    for f in args.files:
        try:
            doc = json.loads(Path(f).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{f}: not a readable results JSON ({e})") from None
        if doc.get("kind") != "accuracy":
            raise UserError(f"{f}: not a bench.accuracy results file (kind {doc.get('kind')!r})")
        docs.append(doc)
    rows = summarize(docs)
    print(format_table(rows))
    out = make_results(
        "accuracy-seeds",
        rows,
        config={"files": args.files, "ci": __doc__.split("\n\n")[1]},
    )
    print(f"wrote {write_json_atomic(args.out, out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
