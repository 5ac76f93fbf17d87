"""``python -m train --method M --data D --epochs N --out DIR``: train one method on seen classes.

Writes ``DIR/M.safetensors`` + ``DIR/M.json`` (the checkpoint selected on held-out seen classes)
and ``DIR/M.metrics.json`` (per-epoch loss, throughput, validation and the unseen-class report).
Evaluate the result with ``python -m bench.accuracy --methods M:DIR/M.safetensors``.

A checkpoint already in ``DIR`` is never silently replaced: ``--resume`` continues the run it
belongs to, ``--overwrite`` trains again from scratch over it, and without either the command
stops before loading any data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from imsim.checkpoints import checkpoint_paths
from imsim.cli import add_data_args, load_data_from_args, positive_int, preflight, run, seed_int
from imsim.errors import UserError
from imsim.models.resnet_cifar import DEPTHS
from train.loop import RunConfig, Trainer, state_paths
from train.recipes import ARCHS, AUGMENTS, METHODS, RECIPES, make_recipe


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
    p.add_argument("--seed", type=seed_int, default=0, help="seed of initialization and sampling")
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out from its last finished epoch",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="train from scratch over a checkpoint already in --out (otherwise refused)",
    )
    g = p.add_argument_group("overrides of the recipe")
    g.add_argument(
        "--depth", type=int, choices=DEPTHS, help="CIFAR ResNet depth (default: 56, the study's)"
    )
    g.add_argument(
        "--arch",
        default="resnet",
        choices=ARCHS,
        help="backbone of triplet/contrastive: the CIFAR ResNet (--depth) or a small ViT "
        "(vit-tiny: 4x4 patches, width 128, 4 layers); default: resnet",
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
        "--augment",
        choices=AUGMENTS,
        help="crop+flip (default: padded random crop and flip per sample) or simclr (random "
        "resized crop, flip, colour jitter and grayscale per sample, SimCLR's views)",
    )
    g.add_argument(
        "--ssl-weight",
        type=float,
        help="weight of a SimCLR (NT-Xent) instance-discrimination term on two views of every "
        "image, added to the metric loss (default: 0, off)",
    )
    g.add_argument(
        "--projection-dim",
        type=positive_int,
        help="ResNet: a 2-layer MLP projection head of this size that the losses see, while "
        "similarity uses the embedding before it (SimCLR); default: none",
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
    d.add_argument(
        "--deterministic",
        action="store_true",
        help="CUDA: deterministic cuDNN/cuBLAS kernels (slower), so a rerun or a --resume "
        "reproduces the run bit for bit; always on with --resume, so pass it to the first run "
        "too (the CPU is deterministic anyway)",
    )
    return p


def _describe(cfg_path: Path) -> str:
    """A finished or interrupted checkpoint in a few words (epoch, validation score)."""
    import json

    try:
        doc = json.loads(cfg_path.read_bytes())
        return (
            f"epoch {doc['epoch']} of {doc['epochs']}, validation "
            f"{doc['validation']['metric']} {float(doc['validation']['value']):.4f}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable config"


def check_previous_run(out: Path, method: str, resume: bool, overwrite: bool) -> None:
    """Refuse to start a run that would replace a checkpoint already in ``out``.

    Without ``--resume`` or ``--overwrite`` an existing ``M.safetensors``/``M.json`` stops the
    command; with ``--resume`` there must be a training state to resume (a finished run has
    none: it would silently start over).
    """
    if overwrite:
        return
    weights, cfg = checkpoint_paths(out / f"{method}.safetensors")
    if not (weights.exists() or cfg.exists()):
        return
    state = state_paths(out, method)[1]
    what = f"{weights} already holds a trained {method} checkpoint ({_describe(cfg)})"
    if not resume:
        hint = "--resume to continue its run, " if state.exists() else ""
        raise UserError(f"{what}; pass {hint}--overwrite to replace it, or choose another --out")
    if not state.exists():
        raise UserError(
            f"{what} and no training state to resume (its run finished); pass --overwrite to "
            "train again from scratch, or choose another --out"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preflight(args, dirs={"--out": args.out})
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} asked for, but no CUDA device is available")
    check_previous_run(Path(args.out), args.method, args.resume, args.overwrite)
    try:  # the recipe first: a bad combination of flags is refused before any data loads
        recipe = make_recipe(
            args.method,
            args.recipe,
            depth=args.depth,
            embedding_dim=args.embedding_dim,
            batch_size=args.batch_size,
            lr=args.lr,
            samples_per_epoch=args.samples_per_epoch,
            arch=args.arch,
            augment=args.augment,
            ssl_weight=args.ssl_weight,
            projection_dim=args.projection_dim,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    ds = load_data_from_args(args)
    cfg = RunConfig(
        method=args.method,
        recipe=recipe,
        epochs=args.epochs,
        out=Path(args.out),
        seed=args.seed,
        resume=args.resume,
        device=args.device,
        amp=args.amp,
        deterministic=args.deterministic,
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
