"""Shared command-line plumbing: data flags, and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from imsim.data.types import Dataset
from imsim.errors import UserError


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default="shapes",
        help="cifar100 | shapes | imagefolder:PATH (folder or .zip of "
        "{train,test}/<class>/<image>); default: shapes (built in)",
    )
    g.add_argument("--data-dir", default="data", help="where cifar100 lives (default: data/)")
    g.add_argument(
        "--download",
        action="store_true",
        help="download cifar100 into --data-dir if missing (needs internet)",
    )
    g.add_argument(
        "--unseen-classes",
        default=None,
        help="comma-separated class names to hold out (default: the dataset's split)",
    )
    g.add_argument(
        "--image-size",
        type=int,
        default=32,
        help="side imagefolder images are resized to (default: 32)",
    )
    g.add_argument("--data-seed", type=int, default=0, help="seed of the shapes generator")


def add_method_args(p: argparse.ArgumentParser) -> None:
    """Model options shared by every command that creates methods; each method reads its own."""
    g = p.add_argument_group("method options")
    g.add_argument(
        "--recipe",
        default="default",
        choices=("default", "seed"),
        help="seed: the reference study's exact recipe; default: the improved one",
    )
    g.add_argument("--clip-model", default="ViT-B-32", help="open_clip model name (CLIP methods)")
    g.add_argument(
        "--pretrained",
        default="openai",
        help="open_clip tag, a local checkpoint file, or none (random weights)",
    )
    g.add_argument("--device", default="cpu", help="torch device for neural methods (cpu, cuda)")
    g.add_argument("--batch-size", type=positive_int, default=256, help="embedding batch size")


def load_data_from_args(args: argparse.Namespace) -> Dataset:
    from imsim.data import load_dataset

    unseen = [c.strip() for c in args.unseen_classes.split(",")] if args.unseen_classes else None
    return load_dataset(
        args.data,
        data_dir=args.data_dir,
        download=args.download,
        seed=args.data_seed,
        unseen=unseen,
        image_size=args.image_size,
    )


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a command's main, turning user-fixable errors into one line and exit status 2."""
    try:
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def add_backend_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """Which inference backend runs a method's network, and its options (with ``--device``)."""
    from imsim.backends import list_backends

    g = p.add_argument_group("inference backend")
    g.add_argument(
        "--backend",
        required=required,
        default=None,
        choices=list_backends(),
        help="run the method's network on this backend"
        + ("" if required else " instead of its own embed (neural methods only)"),
    )
    g.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "bf16"),
        help="torch: fp32/fp16/bf16; onnxruntime: fp32/fp16 (M.onnx/M.fp16.onnx); trt: fp16/fp32; "
        "openvino: fp32/bf16 (both from M.onnx)",
    )
    g.add_argument("--onnx-dir", default="artifacts/onnx", help="where python -m export wrote")
    g.add_argument(
        "--engine-dir", default="artifacts/engines", help="where python -m engines.build wrote"
    )
    g.add_argument("--compile", action="store_true", help="torch: torch.compile the module")
    g.add_argument(
        "--no-channels-last", action="store_true", help="torch: keep contiguous (NCHW) weights"
    )
    g.add_argument(
        "--ort-provider",
        default=None,
        choices=("cpu", "cuda", "tensorrt"),
        help="onnxruntime execution provider (default: cpu, or cuda with --device cuda)",
    )
    g.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads (torch: intra-op pool; onnxruntime: intra-op); default: the runtime's",
    )
    g.add_argument(
        "--ort-opt-level",
        default=None,
        choices=("disable", "basic", "extended", "all"),
        help="onnxruntime graph optimization (default: extended for fp16 on cpu, else all)",
    )


def method_item(method: str, checkpoint: str | None) -> str:
    """The registry item for ``--method M [--checkpoint PATH]``: ``M`` or ``M:PATH``."""
    if checkpoint is None:
        return method
    if ":" in method:
        raise UserError(f"give the checkpoint once: --method {method} or --checkpoint, not both")
    return f"{method}:{checkpoint}"


def add_one_method_args(p: argparse.ArgumentParser) -> None:
    """``--method M [--checkpoint PATH]`` for commands that work on one method (see method_item)."""
    from imsim.methods import list_methods

    p.add_argument("--method", required=True, help=f"one of {', '.join(list_methods())}")
    p.add_argument("--checkpoint", default=None, help="weights file of a trained method")


def add_episode_args(p: argparse.ArgumentParser, episodes_help: str = "how many") -> None:
    """The episodes protocol's sampler flags (defaults: 10-way 5-shot, 15 queries, seed 0)."""
    g = p.add_argument_group("episodes")
    g.add_argument("--ways", type=positive_int, default=10, help="classes per episode")
    g.add_argument("--shots", type=positive_int, default=5, help="support images per class")
    g.add_argument("--queries", type=positive_int, default=15, help="queries per class")
    g.add_argument("--episodes", type=positive_int, default=1000, help=episodes_help)
    g.add_argument("--seed", type=int, default=0, help="seed of the episode sampler")
