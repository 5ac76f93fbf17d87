"""``python -m train.report DIR``: the per-epoch curves of the runs in DIR, as Markdown.

For each ``DIR/*.metrics.json``: loss, validation score (held-out seen classes) and the
unseen-class numbers per epoch, the epoch selected on validation, and what selecting on the
unseen classes themselves (the reference study's leak) would have reported instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imsim.cli import run
from imsim.errors import UserError


def curve_table(doc: dict) -> str:
    method = doc["config"]["method"]
    selected = (doc.get("selected") or {}).get("epoch")
    lines = [
        f"**{method}** ({doc['config']['recipe']['name']} recipe, data {doc['config']['data']})",
        "",
        "| epoch | loss | val mAP@R (held-out seen) | unseen episodes top-1 (%) | unseen mAP@R |",
        "|---|---|---|---|---|",
    ]
    for h in doc["epochs"]:
        mark = " (selected)" if h["epoch"] == selected else ""
        loss = f"{h['loss']:.4f}" if "loss" in h else "–"
        lines.append(
            f"| {h['epoch']}{mark} | {loss} | {h['val_map@r']:.4f} | "
            f"{100 * h['unseen_episodes_top1']:.2f} ± {100 * h['unseen_episodes_ci95']:.2f} | "
            f"{h['unseen_map@r']:.4f} |"
        )
    trained = [h for h in doc["epochs"] if h["epoch"] > 0]
    if trained and selected is not None:
        best = next(h for h in trained if h["epoch"] == selected)
        peek = max(trained, key=lambda h: h["unseen_episodes_top1"])
        lines += [
            "",
            f"Selected on held-out seen classes: epoch {selected}, unseen episodes "
            f"{100 * best['unseen_episodes_top1']:.2f}%. Selecting on the unseen classes (the "
            f"study's leak) would pick epoch {peek['epoch']} and report "
            f"{100 * peek['unseen_episodes_top1']:.2f}%.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.report", description=__doc__.split("\n")[0])
    p.add_argument("dirs", nargs="+", help="output folders of python -m train")
    args = p.parse_args(argv)
    files = sorted(f for d in args.dirs for f in Path(d).glob("*.metrics.json"))
    if not files:
        raise UserError(f"no *.metrics.json in {', '.join(args.dirs)}")
    for f in files:
        try:
            doc = json.loads(f.read_text())
            print(curve_table(doc) + "\n")
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"{f} is not a training metrics file ({e})") from None
    return 0


if __name__ == "__main__":
    run(main)
