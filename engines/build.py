"""``python -m engines.build``: a TensorRT engine per exported method, with its manifest.

- TensorRT 11 (strong typing only, no FP16 builder flag): the FP16 engine is built from
  ``M.fp16.onnx``, whose types (FP16 math, FP32 LayerNorm/softmax/reductions/normalization) it
  follows exactly.
- TensorRT 10: by default from ``M.onnx`` with ``BuilderFlag.FP16`` (TensorRT picks FP16 or FP32
  per layer); ``--source fp16`` builds ``M.fp16.onnx`` strongly typed instead, like TensorRT 11
  (the FP16 flag would let TensorRT override the ops the graph keeps in FP32).
- An optimization profile over the batch axis (min 1, ``--opt-batch``, ``--max-batch``), a
  workspace limit, and a timing cache kept on disk so rebuilds skip kernel timing.
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

from imsim.artifacts import load_onnx_sidecar, onnx_path, sha256_file, write_bytes_atomic
from imsim.backends.engine_manifest import (
    ENGINE_PRECISIONS,
    Profile,
    check_manifest,
    engine_path,
    load_manifest,
    make_manifest,
    manifest_path,
)
from imsim.backends.tensorrt_backend import gpu_identity, require_cuda, require_tensorrt, trt_major
from imsim.cli import csv_list, positive_int, run
from imsim.errors import UserError
from imsim.results import write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engines.build", description=__doc__.split("\n")[0])
    p.add_argument(
        "--methods", default="all", help="comma-separated, or all (every M.onnx in --onnx-dir)"
    )
    p.add_argument("--onnx-dir", default="artifacts/onnx", help="where python -m export wrote")
    p.add_argument(
        "--out", default="artifacts/engines", help="engine folder (default: %(default)s)"
    )
    p.add_argument("--precision", default="fp16", choices=ENGINE_PRECISIONS)
    p.add_argument(
        "--source",
        default="auto",
        choices=("auto", "fp32", "fp16"),
        help="ONNX to build from (auto: fp16 engines from M.onnx on TensorRT 10, "
        "M.fp16.onnx on TensorRT 11)",
    )
    p.add_argument("--opt-batch", type=positive_int, default=64, help="profile opt batch")
    p.add_argument("--max-batch", type=positive_int, default=256, help="profile max batch")
    p.add_argument("--workspace-gib", type=float, default=4.0, help="builder workspace limit")
    p.add_argument("--timing-cache", default=None, help="default: OUT/timing.cache")
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


def build_mode(major: int, precision: str, source: str) -> tuple[str, bool, bool]:
    """(source ONNX precision, strongly typed, FP16 builder flag) for a TensorRT major version."""
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
    if source == "fp16":
        return "fp16", True, False
    return "fp32", False, True


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
    methods: list[str], onnx_dir: Path, out: Path, precision: str, source: str, major: int
) -> list[Job]:
    """The engines to build, each source ONNX checked against its sidecar first."""
    src_precision, strongly_typed, fp16_flag = build_mode(major, precision, source)
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


def build_engine(
    trt: ModuleType,
    job: Job,
    profile: Profile,
    input_name: str,
    image_shape: tuple[int, int, int],
    workspace_bytes: int,
    timing_cache: Path,
) -> bytes:
    """Parse the ONNX, configure the builder and return the serialized engine."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if job.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(job.source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {job.source}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if job.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    elif job.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # a true fp32 engine
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(
        input_name,
        (profile.min, *image_shape),
        (profile.opt, *image_shape),
        (profile.max, *image_shape),
    )
    config.add_optimization_profile(opt_profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    plan_bytes = builder.build_serialized_network(network, config)
    if plan_bytes is None:
        raise UserError(f"TensorRT failed to build an engine from {job.source}; see its log above")
    serialized = bytes(memoryview(config.get_timing_cache().serialize()))
    write_bytes_atomic(timing_cache, lambda tmp: tmp.write_bytes(serialized))
    return bytes(memoryview(plan_bytes))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    profile = Profile(1, args.opt_batch, args.max_batch)
    if not args.workspace_gib > 0:
        raise UserError(f"--workspace-gib must be > 0, got {args.workspace_gib}")
    onnx_dir, out = Path(args.onnx_dir), Path(args.out)
    methods = find_methods(onnx_dir, args.methods)
    trt = require_tensorrt()
    dev = require_cuda(args.device)
    gpu, cc = gpu_identity(dev)
    jobs = plan(methods, onnx_dir, out, args.precision, args.source, trt_major(trt.__version__))
    timing_cache = Path(args.timing_cache or out / "timing.cache")
    for job in jobs:
        if not args.force and up_to_date(job, onnx_dir, trt.__version__, gpu, cc):
            print(f"{job.engine} is up to date")
            continue
        side = load_onnx_sidecar(job.source, job.method)
        h, w = side["input_size"]
        t0 = time.perf_counter()
        engine = build_engine(
            trt,
            job,
            profile,
            side["input"]["name"],
            (int(h), int(w), 3),
            int(args.workspace_gib * 2**30),
            timing_cache,
        )
        seconds = time.perf_counter() - t0
        write_bytes_atomic(job.engine, lambda tmp, data=engine: tmp.write_bytes(data))
        build: dict[str, Any] = {
            "source_precision": side["precision"],
            "strongly_typed": job.strongly_typed,
            "builder_flags": ["FP16"] if job.fp16_flag else [],
            "workspace_bytes": int(args.workspace_gib * 2**30),
            "timing_cache": str(timing_cache),
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
