"""``python -m engines.build``: a TensorRT engine per exported method, with its manifest.

- FP16 engines are built strongly typed from ``M.fp16.onnx`` wherever TensorRT allows it as the
  default: TensorRT 11 (strong typing only, no FP16 builder flag) and TensorRT 10.12+, where the
  weakly typed ``BuilderFlag.FP16`` is deprecated. The engine then follows the graph's types
  exactly (FP16 math; FP32 preprocessing, LayerNorm, softmax, reductions and normalization): the
  numerics ONNX Runtime verified at export, the same on TensorRT 10 and 11.
- TensorRT 10.0-10.11: by default from ``M.onnx`` with ``BuilderFlag.FP16`` (TensorRT picks FP16
  or FP32 per layer); ``--source fp16`` builds strongly typed there too.
- INT8 engines are built from the QDQ ``M.int8.onnx`` (``export --precision int8``: symmetric INT8,
  zero points 0, per-channel weights, float biases) strongly typed on every TensorRT 10 and 11, with
  no precision builder flag: TensorRT then runs exactly the Q/DQ placement and the float parts
  ONNX Runtime verified at export. "When TensorRT detects Q/DQ layers in a network, it builds an
  engine using explicit quantization processing logic [...] Use explicit quantization with Strong
  Typing. Precision-control build flags are not required and should not be specified" (TensorRT
  developer guide, "Explicit Quantization"); implicit quantization (``BuilderFlag.INT8`` with a
  calibrator) is deprecated in TensorRT 10 and not used here.
- An optimization profile over the batch axis (min 1, ``--opt-batch``, ``--max-batch``), a
  workspace limit, and a timing cache kept on disk so rebuilds skip kernel timing. Timings are
  only valid for one TensorRT version and GPU, so the default cache file is keyed by both
  (``OUT/timing-trt<version>-sm<cc>.cache``); a cache TensorRT still rejects is replaced by an
  empty one, and failing to save it never loses the engine just built.
- The builder runs on ``--device`` (TensorRT builds for the current CUDA device).
- ``M.<precision>.engine.json`` beside each engine records what it was built from and for; an
  engine whose manifest still matches (same ONNX, TensorRT and GPU) is not rebuilt unless
  ``--force``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from imsim.artifacts import load_onnx_sidecar, onnx_path
from imsim.backends.engine_manifest import (
    Profile,
    check_manifest,
    engine_path,
    load_manifest,
    make_manifest,
    manifest_path,
)
from imsim.backends.tensorrt_backend import (
    TensorRTBackend,
    gpu_identity,
    require_cuda,
    require_tensorrt,
    trt_version,
)
from imsim.cli import csv_list, positive_int, preflight, run
from imsim.errors import UserError
from imsim.files import sha256_file, write_bytes_atomic, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engines.build", description=__doc__.split("\n")[0])
    p.add_argument(
        "--methods", default="all", help="comma-separated, or all (every M.onnx in --onnx-dir)"
    )
    p.add_argument("--onnx-dir", default="artifacts/onnx", help="where python -m export wrote")
    p.add_argument(
        "--out", default="artifacts/engines", help="engine folder (default: %(default)s)"
    )
    p.add_argument(
        "--precision",
        default=TensorRTBackend.default_precision,  # what the trt backend looks for by default
        choices=TensorRTBackend.precisions,
        help="default: %(default)s",
    )
    p.add_argument(
        "--source",
        default="auto",
        choices=("auto", "fp32", "fp16", "int8"),
        help="ONNX to build from (auto: fp16 engines strongly typed from M.fp16.onnx on "
        "TensorRT 10.12+ and 11, from M.onnx with the FP16 builder flag before 10.12; int8 "
        "engines strongly typed from the QDQ M.int8.onnx)",
    )
    p.add_argument("--opt-batch", type=positive_int, default=64, help="profile opt batch")
    p.add_argument("--max-batch", type=positive_int, default=256, help="profile max batch")
    p.add_argument("--workspace-gib", type=float, default=4.0, help="builder workspace limit")
    p.add_argument(
        "--timing-cache",
        default=None,
        help="timing cache file (default: OUT/timing-trt<version>-sm<compute capability>.cache, "
        "one per TensorRT version and GPU)",
    )
    p.add_argument("--device", default="cuda", help="CUDA device to build for")
    p.add_argument("--force", action="store_true", help="rebuild even up-to-date engines")
    return p


@dataclass(frozen=True)
class Job:
    """One engine to build: from which ONNX, to which file, and how."""

    method: str
    precision: str
    source: Path
    engine: Path
    strongly_typed: bool
    fp16_flag: bool


# From this version on, ``--source auto`` builds FP16 engines strongly typed: the weakly typed
# BuilderFlag.FP16 is deprecated since TensorRT 10.12 (and gone in 11).
STRONGLY_TYPED_DEFAULT = (10, 12)


def build_mode(version: tuple[int, int], precision: str, source: str) -> tuple[str, bool, bool]:
    """(source ONNX precision, strongly typed, FP16 builder flag) for a TensorRT (major, minor)."""
    major = version[0]
    if precision == "int8" or source == "int8":
        # Explicit quantization, strongly typed, on 10 and 11 alike (module docstring).
        if precision != "int8" or source not in ("auto", "int8"):
            raise UserError(
                "int8 engines are built from the QDQ ONNX (M.int8.onnx) only: use --precision "
                "int8 with --source auto or int8"
            )
        return "int8", True, False
    if precision == "fp32":
        if source == "fp16":
            raise UserError("an fp32 engine is built from the FP32 ONNX; drop --source fp16")
        return "fp32", major >= 11, False
    if major >= 11:
        if source == "fp32":
            raise UserError(
                "TensorRT 11 has no FP16 builder flag: FP16 engines are built from the FP16 "
                "ONNX (--source fp16 or auto)"
            )
        return "fp16", True, False
    if source == "fp16" or (source == "auto" and version >= STRONGLY_TYPED_DEFAULT):
        return "fp16", True, False
    return "fp32", False, True


def network_flags(trt: ModuleType, strongly_typed: bool) -> int:
    """``create_network`` flags. TensorRT 11 networks are always strongly typed: its
    ``STRONGLY_TYPED`` flag is documented as ignored and may be dropped, so it is read with
    getattr and never needed there."""
    if not strongly_typed or trt_version(trt.__version__)[0] >= 11:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise UserError(
            f"TensorRT {trt.__version__} has no strongly typed networks; install TensorRT 10.12+ "
            "(fp16 engines can also be built from the FP32 ONNX: --source fp32)"
        )
    return 1 << int(flag)


def timing_cache_path(folder: Path, tensorrt_version: str, compute_capability: str) -> Path:
    """The timing cache for one TensorRT version and GPU architecture: kernel timings measured on
    another are rejected by TensorRT (or, with ignore_mismatch, wrong), so each gets its file."""
    sm = compute_capability.replace(".", "")
    return Path(folder) / f"timing-trt{tensorrt_version}-sm{sm}.cache"


def attach_timing_cache(config: Any, path: Path) -> str:
    """Give the builder config the timing cache at ``path``; returns what happened: ``loaded``,
    ``new`` (no file yet), ``replaced`` (TensorRT rejected the file: an empty cache instead) or
    ``none`` (not even an empty cache was accepted: the build runs without one).

    ``IBuilderConfig.create_timing_cache`` can return None for a blob it cannot read and
    ``set_timing_cache`` returns False for a cache from other CUDA device properties (TensorRT
    API reference, IBuilderConfig); both results are checked rather than trusted.
    """
    blob = path.read_bytes() if path.is_file() else b""
    if blob:
        cache = config.create_timing_cache(blob)
        if cache is not None and config.set_timing_cache(cache, False):
            return "loaded"
        print(
            f"warning: TensorRT rejected the timing cache {path} (another TensorRT or GPU, or "
            "damaged); timing kernels anew, the file will be replaced",
            file=sys.stderr,
        )
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        print(
            "warning: TensorRT refused an empty timing cache; building without one", file=sys.stderr
        )
        return "none"
    return "replaced" if blob else "new"


def serialized_timing_cache(config: Any) -> bytes | None:
    """The builder's timing cache after a build, or None (with a warning) when TensorRT has none
    to give: never an exception, since the engine just built must still be written."""
    cache = config.get_timing_cache()
    data = cache.serialize() if cache is not None else None
    if data is None:
        print("warning: TensorRT returned no timing cache; it was not saved", file=sys.stderr)
        return None
    return bytes(memoryview(data))


def save_timing_cache(path: Path, data: bytes | None) -> bool:
    """Write the cache atomically; a failure is one warning line, not a failed build."""
    if data is None:
        return False
    try:
        write_bytes_atomic(path, data)
    except OSError as e:
        print(f"warning: could not save the timing cache {path}: {e}", file=sys.stderr)
        return False
    return True


def find_methods(onnx_dir: Path, methods: str) -> list[str]:
    if methods != "all":
        return csv_list(methods)
    names = sorted(
        p.name[: -len(".onnx")] for p in onnx_dir.glob("*.onnx") if p.name.count(".") == 1
    )
    if not names:
        raise UserError(f"no exported ONNX files in {onnx_dir}; run python -m export first")
    return names


def plan(
    methods: list[str],
    onnx_dir: Path,
    out: Path,
    precision: str,
    source: str,
    version: tuple[int, int],
) -> list[Job]:
    """The engines to build, each source ONNX checked against its sidecar first."""
    precision = TensorRTBackend.check_precision(precision)
    src_precision, strongly_typed, fp16_flag = build_mode(version, precision, source)
    jobs = []
    for m in methods:
        src = onnx_path(onnx_dir, m, src_precision)
        load_onnx_sidecar(src, m)
        jobs.append(
            Job(m, precision, src, engine_path(out, m, precision), strongly_typed, fp16_flag)
        )
    return jobs


def up_to_date(job: Job, onnx_dir: Path, trt_version: str, gpu: str, cc: str) -> bool:
    if not job.engine.is_file():
        return False
    try:
        manifest = load_manifest(job.engine, onnx_dir)
        check_manifest(
            manifest,
            engine=job.engine,
            onnx_dir=onnx_dir,
            tensorrt_version=trt_version,
            gpu_name=gpu,
            compute_capability=cc,
        )
    except UserError:
        return False
    return manifest["onnx"]["file"] == job.source.name


@dataclass(frozen=True)
class Built:
    """A serialized engine and the builder's timing cache (None when TensorRT gave none)."""

    engine: bytes
    timing_cache: bytes | None
    cache_state: str


def build_engine(
    trt: ModuleType,
    job: Job,
    profile: Profile,
    input_name: str,
    image_shape: tuple[int, int, int],
    workspace_bytes: int,
    timing_cache: Path,
) -> Built:
    """Parse the ONNX, configure the builder and build, on the current CUDA device (the caller
    selects ``--device``: TensorRT binds an engine to the device current at build time)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, job.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(job.source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {job.source}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if job.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    elif job.precision in ("fp32", "int8") and hasattr(trt.BuilderFlag, "TF32"):
        # A true fp32 engine; for int8, the float parts (and what export --gate kept in FP32)
        # stay FP32 as ONNX Runtime verified them.
        config.clear_flag(trt.BuilderFlag.TF32)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(
        input_name,
        (profile.min, *image_shape),
        (profile.opt, *image_shape),
        (profile.max, *image_shape),
    )
    config.add_optimization_profile(opt_profile)
    cache_state = attach_timing_cache(config, timing_cache)
    plan_bytes = builder.build_serialized_network(network, config)
    if plan_bytes is None:
        raise UserError(f"TensorRT failed to build an engine from {job.source}; see its log above")
    cache = serialized_timing_cache(config) if cache_state != "none" else None
    return Built(bytes(memoryview(plan_bytes)), cache, cache_state)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preflight(
        args,
        dirs={"--out": args.out},
        files={"--timing-cache": args.timing_cache},
        method_args=False,
    )
    profile = Profile(1, args.opt_batch, args.max_batch)
    if not args.workspace_gib > 0:
        raise UserError(f"--workspace-gib must be > 0, got {args.workspace_gib}")
    onnx_dir, out = Path(args.onnx_dir), Path(args.out)
    methods = find_methods(onnx_dir, args.methods)
    trt = require_tensorrt()
    dev = require_cuda(args.device)
    gpu, cc = gpu_identity(dev)
    jobs = plan(methods, onnx_dir, out, args.precision, args.source, trt_version(trt.__version__))
    timing_cache = (
        Path(args.timing_cache)
        if args.timing_cache
        else timing_cache_path(out, trt.__version__, cc)
    )
    for job in jobs:
        if not args.force and up_to_date(job, onnx_dir, trt.__version__, gpu, cc):
            print(f"{job.engine} is up to date")
            continue
        side = load_onnx_sidecar(job.source, job.method)
        h, w = side["input_size"]
        t0 = time.perf_counter()
        # TensorRT builds for the current CUDA device ("Each ICudaEngine object is bound to a
        # specific GPU when it is instantiated, either by the builder or on deserialization. To
        # select the GPU, use cudaSetDevice() before calling the builder", TensorRT developer
        # guide, FAQ on multiple GPUs): the device the manifest records.
        with torch.cuda.device(dev):
            built = build_engine(
                trt,
                job,
                profile,
                side["input"]["name"],
                (int(h), int(w), 3),
                int(args.workspace_gib * 2**30),
                timing_cache,
            )
        seconds = time.perf_counter() - t0
        write_bytes_atomic(job.engine, built.engine)
        saved = save_timing_cache(timing_cache, built.timing_cache)
        build: dict[str, Any] = {
            "source_precision": side["precision"],
            "strongly_typed": job.strongly_typed,
            "builder_flags": ["FP16"] if job.fp16_flag else [],
            "workspace_bytes": int(args.workspace_gib * 2**30),
            "timing_cache": {"file": str(timing_cache), "state": built.cache_state, "saved": saved},
            "seconds": round(seconds, 1),
        }
        manifest = make_manifest(
            method=job.method,
            precision=job.precision,
            engine_sha256=sha256_file(job.engine),
            onnx_file=job.source,
            onnx_sha256=side["onnx_sha256"],
            tensorrt_version=trt.__version__,
            gpu_name=gpu,
            compute_capability=cc,
            profile=profile,
            input_name=side["input"]["name"],
            input_shape=(int(h), int(w), 3),
            output_name=side["output"]["name"],
            embedding_size=side["embedding_size"],
            build=build,
        )
        write_json_atomic(manifest_path(job.engine), manifest)
        size = job.engine.stat().st_size / 2**20
        print(f"wrote {job.engine} ({size:.1f} MiB, {seconds:.0f} s) from {job.source.name}")
    print(f"TensorRT {trt.__version__} on {gpu} (compute capability {cc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
