"""``python -m train --method M --data D --epochs N --out DIR``: train one method on seen classes.

Writes ``DIR/M.safetensors`` + ``DIR/M.json`` (the checkpoint selected on held-out seen classes)
and ``DIR/M.metrics.json`` (per-epoch loss, throughput, validation and the unseen-class report).
Evaluate the result with ``python -m bench.accuracy --methods M:DIR/M.safetensors``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from imsim.cli import add_data_args, load_data_from_args, positive_int, run
from imsim.errors import UserError
from imsim.models.resnet_cifar import DEPTHS
from train.loop import RunConfig, Trainer
from train.recipes import METHODS, RECIPES, make_recipe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0])
    p.add_argument("--method", required=True, choices=METHODS)
    add_data_args(p)
    p.add_argument("--epochs", type=positive_int, required=True, help="epochs to train")
    p.add_argument("--out", default="checkpoints", help="output folder (default: checkpoints)")
    p.add_argument(
        "--recipe",
        default="default",
        choices=RECIPES,
        help="seed: the reference study's recipe as written; default: the improved one",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of initialization and sampling")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out from its last finished epoch",
    )
    g = p.add_argument_group("overrides of the recipe")
    g.add_argument(
        "--depth", type=int, choices=DEPTHS, help="CIFAR ResNet depth (default: 56, the study's)"
    )
    g.add_argument("--embedding-dim", type=positive_int, help="embedding size (default: 64)")
    g.add_argument("--batch-size", type=positive_int, help="training batch size (default: 128)")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument(
        "--samples-per-epoch",
        type=positive_int,
        help="samples per epoch (default: one pass over the training images; seed: 50,000)",
    )
    g.add_argument(
        "--val-classes",
        type=positive_int,
        help="seen classes held out for validation (default: 1 in 9, at least 1)",
    )
    d = p.add_argument_group("device")
    d.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    d.add_argument(
        "--amp",
        default="auto",
        choices=("auto", "bf16", "fp16", "off"),
        help="mixed precision; auto: only what the device runs natively: bf16 on CPUs with "
        "AVX512-BF16/AMX and on GPUs with native bf16 (Ampere+), fp16 on older GPUs with tensor "
        "cores (T4, V100), else off; bf16/fp16 asked for on a device that emulates it still run, "
        "with a warning",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} asked for, but no CUDA device is available")
    ds = load_data_from_args(args)
    recipe = make_recipe(
        args.method,
        args.recipe,
        depth=args.depth,
        embedding_dim=args.embedding_dim,
        batch_size=args.batch_size,
        lr=args.lr,
        samples_per_epoch=args.samples_per_epoch,
    )
    cfg = RunConfig(
        method=args.method,
        recipe=recipe,
        epochs=args.epochs,
        out=Path(args.out),
        seed=args.seed,
        resume=args.resume,
        device=args.device,
        amp=args.amp,
        val_classes=args.val_classes,
        data_spec=args.data,
        extra={"data_seed": args.data_seed, "image_size": args.image_size},
    )
    trainer = Trainer(cfg, ds)
    split = trainer.split_info()
    print(
        f"{ds.name}: training {args.method} ({recipe.name} recipe) on {len(split['train'])} "
        f"classes, validating on {len(split['validation'])} held-out seen classes "
        f"({', '.join(split['validation'][:10])}{', ...' if len(split['validation']) > 10 else ''})",  # noqa: E501
        file=sys.stderr,
    )
    result = trainer.run()
    best = result["best"]
    out = Path(args.out)
    print(
        f"selected epoch {best['epoch']} (val mAP@R {best['val_map@r']:.4f}); unseen classes at "
        f"that epoch: episodes top-1 {100 * best['unseen_episodes_top1']:.2f}%, "
        f"mAP@R {best['unseen_map@r']:.4f}"
    )
    print(f"wrote {out / (args.method + '.safetensors')} and {out / (args.method + '.json')}")
    return 0


if __name__ == "__main__":
    run(main)
