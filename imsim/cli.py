"""Shared command-line plumbing: data flags, argument checks made before any work, and one-line
errors instead of tracebacks.

Every command validates what it can before it loads data or builds a model (``preflight``): its
output paths, method names, backend and precision, device; flag types reject negative seeds,
zero sizes and non-finite numbers at parse time. A bad input then costs a second, not a run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from imsim.data.types import Dataset
from imsim.errors import UserError
from imsim.results import check_output_dir, check_output_file

MAX_SEED = 2**32 - 1  # what every generator here accepts (numpy's legacy seeding is the smallest)
MAX_IMAGE_SIZE = 4096
PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")  # how flags and help list precisions


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
        type=image_side,
        default=32,
        help="side imagefolder images are resized to (default: 32)",
    )
    g.add_argument("--data-seed", type=seed_int, default=0, help="seed of the shapes generator")


# The model options of ``add_method_args`` and their defaults. A value other than its default is
# a choice the user made: some requested method must take it (``registry.check_method_flags``).
# ``--batch-size`` is not among them: every command batches its embedding with it.
METHOD_FLAGS = {
    "recipe": "default",
    "clip_model": "ViT-B-32",
    "pretrained": "openai",
    "device": "cpu",
}


def add_method_args(p: argparse.ArgumentParser) -> None:
    """Model options shared by every command that creates methods; each method declares the ones
    it takes (``imsim.methods.registry``), and one set that no requested method takes is an
    error."""
    g = p.add_argument_group("method options")
    g.add_argument(
        "--recipe",
        default=METHOD_FLAGS["recipe"],
        choices=("default", "seed"),
        help="seed: the reference study's exact recipe; default: the improved one "
        "(classical and CLIP methods)",
    )
    g.add_argument(
        "--clip-model", default=METHOD_FLAGS["clip_model"], help="open_clip model name (CLIP)"
    )
    g.add_argument(
        "--pretrained",
        default=METHOD_FLAGS["pretrained"],
        help="open_clip tag, a local checkpoint file, or none (random weights) (CLIP)",
    )
    g.add_argument(
        "--device",
        default=METHOD_FLAGS["device"],
        help="torch device for neural methods (cpu, cuda)",
    )
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


def seed_int(text: str) -> int:
    """A random seed: an integer from 0 to 2**32 - 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is between 0 and {MAX_SEED}, got {v}")
    return v


def image_side(text: str) -> int:
    """An image side in pixels, 1 to ``MAX_IMAGE_SIZE``."""
    v = positive_int(text)
    if v > MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_IMAGE_SIZE} pixels, got {v}")
    return v


def finite_float(
    low: float | None = None, high: float | None = None, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number within [low, high] (``low_open``: above low)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and (v <= low if low_open else v < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {v}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {v}")
        return v

    return parse


def _check_method_names(args: argparse.Namespace) -> None:
    from imsim.methods import list_methods

    items = []
    if isinstance(getattr(args, "methods", None), str):
        items += [m for m in csv_list(args.methods) if m != "all"]
    if isinstance(getattr(args, "method", None), str):
        items.append(args.method)
    known = list_methods()
    for item in items:
        name = item.partition(":")[0]
        if name not in known:
            raise UserError(f"unknown method {name!r}; known: {', '.join(sorted(known))}")


def _check_backend(args: argparse.Namespace) -> None:
    from imsim.backends import backend_class

    name, precision = getattr(args, "backend", None), getattr(args, "precision", None)
    if not name:
        return
    try:
        cls = backend_class(name)
    except ImportError:  # its runtime is missing: creating the backend says so, in one line
        return
    # Each backend owns its default (trt: fp16, what engines.build builds by default).
    resolved = cls.check_precision(precision)
    if hasattr(args, "precision"):
        args.precision = resolved


def _check_device(args: argparse.Namespace) -> None:
    device = str(getattr(args, "device", "cpu") or "cpu")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device} asked for, but no CUDA device is available")


def preflight(
    args: argparse.Namespace,
    *,
    files: dict[str, str | Path | None] | None = None,
    dirs: dict[str, str | Path | None] | None = None,
    method_args: bool = True,
) -> None:
    """Everything a command can check before it does any work, each failure one line.

    Seeds (``--seed``, ``--data-seed``) must be in [0, 2**32 - 1].
    ``files``/``dirs``: output paths by flag (``{"--out": args.out}``; None values are skipped)
    that must be writable at the end: not an existing folder (files) or file (folders), below a
    writable folder. ``method_args``: also check ``--method``/``--methods`` names against the
    registry, ``--precision`` against ``--backend``, and that a ``--device cuda`` exists.
    """
    for name in ("seed", "data_seed"):  # whatever type a command's own parser gave them
        v = getattr(args, name, None)
        if isinstance(v, int) and not 0 <= v <= MAX_SEED:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag}: a seed is between 0 and {MAX_SEED}, got {v}")
    for flag, path in (files or {}).items():
        check_output_file(path, flag)
    for flag, path in (dirs or {}).items():
        check_output_dir(path, flag)
    if method_args:
        _check_method_names(args)
        _check_backend(args)
        _check_device(args)


@contextlib.contextmanager
def one_line_usage_errors() -> Iterator[None]:
    """Within: a bad flag is reported as one ``error:`` line (exit 2), like every other bad input,
    rather than argparse's usage block followed by the message."""
    original = argparse.ArgumentParser.error

    def error(self: argparse.ArgumentParser, message: str) -> None:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a command's main, turning user-fixable errors into one line and exit status 2."""
    try:
        with one_line_usage_errors():
            code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # the machine's, not the code's: a full disk, a file removed meanwhile
        print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def add_backend_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """Which inference backend runs a method's network: the flags every backend shares (with
    ``--device``), then each backend's own group (``Backend.add_args``)."""
    from imsim.backends import backend_classes, list_backends

    classes = list(backend_classes())
    precisions = sorted({q for c in classes for q in c.precisions}, key=PRECISION_ORDER.index)
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
        default=None,
        choices=precisions,
        help="default: the backend's own ("
        + ", ".join(f"{c.name}: {c.default_precision}" for c in classes)
        + "); each runs "
        + "; ".join(f"{c.name}: {'/'.join(c.precisions)}" for c in classes),
    )
    g.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads (torch: intra-op pool; onnxruntime: intra-op; openvino: inference); "
        "default: the runtime's",
    )
    g.add_argument("--onnx-dir", default="artifacts/onnx", help="where python -m export wrote")
    g.add_argument(
        "--engine-dir", default="artifacts/engines", help="where python -m engines.build wrote"
    )
    for cls in classes:
        cls.add_args(p)


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
    g.add_argument("--seed", type=seed_int, default=0, help="seed of the episode sampler")


# Flags of the parity gate's tolerances -> ``imsim.parity.Tolerances`` fields. ``reported``
# adds the checks that are reported beside the gate (bench.parity) but never decide it.
GATE_FLAGS = {
    "cos_min": "cos_min",
    "cos_mean": "cos_mean",
    "tie_aware_top1": "tie_aware_top1",
    "episode_delta_ci": "episode_delta_ci_points",
}
REPORTED_FLAGS = {
    "top1_agreement": "top1_agreement",
    "top5_overlap": "top5_overlap",
    "acc_delta": "acc_delta_points",
}


def add_tolerance_args(group: argparse._ArgumentGroup, reported: bool = False) -> None:
    """The gate's tolerance flags (defaults per precision: ``imsim.parity.tolerances_for``)."""
    group.add_argument(
        "--cos-min", type=float, default=None, help="fp32: 0.99999; fp16/bf16: 0.999; int8: 0.99"
    )
    group.add_argument(
        "--cos-mean", type=float, default=None, help="fp32: 0.99999; fp16/bf16: 0.9999; int8: 0.999"
    )
    group.add_argument(
        "--tie-aware-top1",
        type=float,
        default=None,
        help="gate: tie-aware top-1 neighbour agreement, at least (default 0.99)",
    )
    group.add_argument(
        "--episode-delta-ci",
        type=float,
        default=None,
        help="gate: the paired episode delta's 95%% CI within +- this many points (default 0.5)",
    )
    if reported:
        group.add_argument(
            "--top1-agreement", type=float, default=None, help="reported: raw, default 0.99"
        )
        group.add_argument(
            "--top5-overlap", type=float, default=None, help="reported: default 0.98"
        )
        group.add_argument(
            "--acc-delta",
            type=float,
            default=None,
            help="reported: seed deltas, points; default 0.3",
        )


def tolerance_overrides(args: argparse.Namespace) -> dict[str, float]:
    """``Tolerances`` fields set by the flags of ``add_tolerance_args`` that were given."""
    flags = {**GATE_FLAGS, **REPORTED_FLAGS}
    given = {field: getattr(args, flag, None) for flag, field in flags.items()}
    return {k: v for k, v in given.items() if v is not None}
