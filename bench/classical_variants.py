"""``python -m bench.classical_variants``: seen-class accuracy of each classical component variant.

How the default recipe's choices (SSIM on luma or per channel, histogram space and comparison,
keypoint score) were made without looking at unseen classes: every variant scores the same pool
of seen-class training images (the pool ``classical`` fits its fusion on), and is judged by
few-shot episode top-1 on those seen classes. Prints a table and writes the results JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from imsim.cli import add_data_args, load_data_from_args, positive_int, preflight, run
from imsim.methods.classical import DEFAULT, ClassicalEmbedder, ClassicalScorer, Recipe
from imsim.protocols import Episodes, evaluate
from imsim.results import make_results, write_json_atomic
from imsim.scoring import MatrixScorer


def variants() -> list[tuple[str, str, Recipe]]:
    """(component, label, recipe) of every variant compared."""
    out = [
        ("ssim", "SSIM 7x7, RGB luma", dataclasses.replace(DEFAULT, ssim_gray="rgb")),
        ("ssim", "SSIM 7x7, per RGB channel", dataclasses.replace(DEFAULT, ssim_gray="color")),
    ]
    for space, bins in (("rgb", (8,)), ("hsv", (16, 4, 4)), ("hsv", (8, 3, 3))):
        for cmp in ("correl", "chisqr", "intersect", "bhattacharyya"):
            label = f"{space.upper()} {'x'.join(map(str, bins * (3 if space == 'rgb' else 1)))}"
            rec = dataclasses.replace(DEFAULT, hist_space=space, hist_bins=bins, hist_compare=cmp)
            out.append(("hist", f"{label} {cmp}", rec))
    for ratio in (0.7, 0.8, 0.9):
        rec = dataclasses.replace(DEFAULT, keypoint_score="ratio", ratio=ratio)
        out.append(("keypoints", f"SIFT ratio test {ratio}", rec))
    rec = dataclasses.replace(DEFAULT, keypoint_score="crosscheck-l1-mean")
    out.append(("keypoints", "SIFT cross-check mean L1 (study)", rec))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.classical_variants", description=__doc__.split("\n")[0]
    )
    add_data_args(p)
    p.add_argument("--pool-size", type=positive_int, default=2000, help="seen images scored")
    p.add_argument("--episodes", type=positive_int, default=300, help="seen-class episodes")
    p.add_argument("--out", default="results/classical_variants.json", help="results JSON path")
    args = p.parse_args(argv)
    preflight(args, files={"--out": args.out})
    ds = load_data_from_args(args)
    seen = ds.train.subset(ds.split.seen)
    classes = np.unique(seen.labels)
    per = max(20, args.pool_size // len(classes))
    idx = np.concatenate([np.flatnonzero(seen.labels == c)[:per] for c in classes])
    labels = seen.labels[idx]
    feats = ClassicalEmbedder("pool", ("ssim",)).embed(seen.images[idx])
    pool = np.arange(len(idx))
    print(
        f"{ds.name}: {len(idx)} seen-class training images, {len(classes)} classes", file=sys.stderr
    )
    protocol = Episodes(episodes=args.episodes)
    rows = []
    print("| component | variant | seen-class episodes top-1 (%) | 95% CI |")
    print("|---|---|---|---|")
    for comp, label, recipe in variants():
        sims = ClassicalScorer(feats, recipe, (comp,), None).component_sim(comp, pool, pool)
        sims = np.where(np.isfinite(sims), sims, np.nanmin(sims[np.isfinite(sims)]) - 1)
        (r,) = evaluate(
            MatrixScorer(sims), labels, tuple(int(c) for c in classes), comp, (protocol,)
        )
        r.update(protocol="seen-episodes", variant=label, recipe=recipe.to_dict())
        rows.append(r)
        print(f"| {comp} | {label} | {100 * r['value']:.2f} | ± {100 * r['ci95']:.2f} |")
    doc = make_results(
        "classical-variants",
        rows,
        config=vars(args),
        dataset={"name": ds.name, "info": ds.info},
        fit_pool={"images": len(idx), "classes": len(classes), "per_class": per},
    )
    print(f"wrote {write_json_atomic(args.out, doc)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
