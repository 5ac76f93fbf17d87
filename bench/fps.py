"""``python -m bench.fps --backend B --method M --batch-sizes 1,8,32,128,512``: throughput.

For each batch size, two modes run on the backend (``imsim.backends``), the same code ``embed``
runs:
- end to end: ``embed`` from uint8 host images (validation, host-to-device copy,
  preprocessing inside the network, output back to the host);
- model only: ``run_prepared`` on inputs prepared once and already on the device.
Each mode runs warm-up steps first (not counted; the first one, where ``torch.compile`` compiles
and lazy runtimes initialize, is reported as ``first_step_s``), then timed steps with a device
synchronize before and after each, rotating among ``--buffers`` distinct inputs so caches do not
flatter. Reports median, p90 and p99 latency and images/s per batch size; a batch size that runs
out of memory is recorded as such and the sweep goes on. Backend creation (session creation,
engine load) is timed separately as ``setup_s``.

Also reports achieved GFLOP/s from the network's counted FLOPs (``FlopCounterMode``: matrix
multiplies, convolutions and attention; element-wise work is not counted) and its fraction of
the device's peak, measured here with a matrix multiply in the run's precision.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.timing import Clock, is_oom, latency_stats, time_steps
from imsim.backends import Backend, create_backend, options_from_args
from imsim.backends.setup import setup_stem
from imsim.cli import (
    add_backend_args,
    add_method_args,
    add_one_method_args,
    csv_list,
    method_item,
    positive_int,
    preflight,
    run,
)
from imsim.errors import UserError
from imsim.hardware import capabilities
from imsim.methods import method_from_args
from imsim.results import make_results, record, write_json_atomic

DEFAULT_BATCH_SIZES = "1,8,32,128,512"
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.fps", description=__doc__.split("\n")[0])
    add_one_method_args(p)
    add_method_args(p)
    add_backend_args(p, required=True)
    p.add_argument(
        "--batch-sizes", default=DEFAULT_BATCH_SIZES, help="comma-separated (default: %(default)s)"
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="side of the uint8 input images (default: the backend's, else 32 like CIFAR)",
    )
    p.add_argument("--iterations", type=positive_int, default=20, help="timed steps, at least")
    p.add_argument(
        "--min-time",
        type=float,
        default=1.0,
        help="seconds of timed steps, at least (more steps for fast models; default 1)",
    )
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps, not timed (default 3)")
    p.add_argument(
        "--buffers", type=positive_int, default=4, help="distinct inputs rotated (default 4)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random input images")
    p.add_argument(
        "--peak-size",
        type=positive_int,
        default=None,
        help="side of the square matmul that measures the peak (default: 2048 CPU, 8192 GPU)",
    )
    p.add_argument("--out", default=None, help="results JSON (default: results/fps/<setup>.json)")
    return p


def batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in csv_list(text)]
    except ValueError:
        raise UserError(f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--batch-sizes must be positive integers, got {text!r}")
    return sizes


def count_flops(module: torch.nn.Module, image_size: int) -> float | None:
    """FLOPs per image of one forward pass (fp32, batch 2), or None when nothing is counted.

    The count must not depend on the machine, yet which attention kernel runs does: the fused
    ``nn.MultiheadAttention`` fast path and the CPU flash-attention kernel (picked on some CPUs,
    not others) are single ops the counter does not see. Counting runs the regular attention path
    with PyTorch's math SDPA kernel, which computes the same thing as explicit matrix multiplies
    (QK^T and AV) that the counter sees on every machine.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8, device=device)
    counter = FlopCounterMode(display=False)
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode(), sdpa_kernel([SDPBackend.MATH]), counter:
            module(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    total = counter.get_total_flops()
    return float(total) / 2 if total > 0 else None


def measure_peak(
    device: str, precision: str, n: int | None = None, iters: int = 20, clock: Clock | None = None
) -> dict[str, Any]:
    """The device's matrix-multiply rate in ``precision`` (best of ``iters`` n x n products).

    Where the device only emulates ``precision`` (``imsim.hardware``: fp16 on most CPUs, bf16 on
    AVX2-only ones), runs are compared with the fp32 rate instead: the emulated products compute
    in fp32 or slower, and an emulated matmul is not a peak of anything.
    """
    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 2048)
    note = None
    caps = capabilities(dev)
    if precision == "int8":
        # No int8 peak: torch's int8 matmul (torch._int_mm) is a reference kernel on the CPU
        # (0.6 GOPS against fp32's 29 GFLOP/s on two Zen 3 cores). INT8 runs are compared with
        # the fp32 rate, the one they must beat; their fraction of it can exceed 100%.
        note = "int8 runs are compared with the fp32 matmul rate (no int8 peak is measured)"
        precision = "fp32"
    elif not caps.native(precision):
        note = (
            f"{precision} is emulated on {caps.name}: {precision} runs are compared with the "
            "fp32 rate"
        )
        precision = "fp32"
    dtype = PEAK_DTYPES[precision]
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=torch.float32, generator=g).to(dtype)
    b = torch.randn(n, n, device=dev, dtype=torch.float32, generator=g).to(dtype)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        t = time_steps(
            lambda _: torch.mm(a, b),
            warmup=2,
            iters=iters,
            sync=sync,
            clock=clock or time.perf_counter,
        )
    flops = 2.0 * n**3
    return {
        "gflops_per_s": flops / min(t.times_s) / 1e9,
        "gflops_per_s_median": flops / float(np.median(t.times_s)) / 1e9,
        "dtype": str(dtype).removeprefix("torch."),
        "matmul": f"{n}x{n} @ {n}x{n}",
        "iterations": len(t.times_s),
        "torch_threads": torch.get_num_threads(),
        **({"note": note} if note else {}),
    }


def measure_batch(
    backend: Backend,
    batch: int,
    image_size: tuple[int, int],
    *,
    warmup: int,
    iters: int,
    min_time_s: float,
    buffers: int,
    seed: int = 0,
    clock: Clock = time.perf_counter,
) -> dict[str, Any]:
    """End-to-end and model-only timings of one batch size (raises on out of memory)."""
    h, w = image_size
    rng = np.random.default_rng(seed + batch)
    host = [rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8) for _ in range(buffers)]
    out: dict[str, Any] = {}

    e2e = time_steps(
        lambda i: backend.embed(host[i % buffers]),
        warmup=warmup,
        iters=iters,
        min_time_s=min_time_s,
        sync=backend.synchronize,
        clock=clock,
    )
    out["end_to_end"] = _mode_stats(e2e, batch)

    prepared = [backend.prepare(x) for x in host]
    backend.synchronize()
    model = time_steps(
        lambda i: backend.run_prepared(prepared[i % buffers]),
        warmup=warmup,
        iters=iters,
        min_time_s=min_time_s,
        sync=backend.synchronize,
        clock=clock,
    )
    out["model_only"] = _mode_stats(model, batch)
    return out


def _mode_stats(t, batch: int) -> dict[str, Any]:
    return {
        **latency_stats(t.times_s, batch),
        "first_step_s": t.warmup_s[0] if t.warmup_s else None,
        "warmup_s": float(sum(t.warmup_s)),
    }


def batch_record(
    name: str,
    tags: dict[str, Any],
    batch: int,
    timings: dict[str, Any],
    flops_per_image: float | None,
    peak_gflops: float | None,
) -> dict[str, Any]:
    """One results record of a batch size: end-to-end numbers on top, model-only nested."""
    e2e, model = timings["end_to_end"], timings["model_only"]
    extra: dict[str, Any] = {}
    if flops_per_image:
        for mode in (e2e, model):
            mode["gflops_per_s"] = mode["images_per_s"] * flops_per_image / 1e9
            if peak_gflops:
                mode["peak_fraction"] = mode["gflops_per_s"] / peak_gflops
        extra["gflops_per_s"] = e2e["gflops_per_s"]
        extra["peak_fraction"] = e2e.get("peak_fraction")
    keys = ("images_per_s", "images_per_s_mean", "p50_ms", "p90_ms", "p99_ms", "mean_ms")
    return record(
        name,
        "fps",
        "images_per_s",
        e2e["images_per_s"],
        **tags,
        batch_size=batch,
        status="ok",
        mode="end_to_end",
        **{k: e2e[k] for k in keys},
        iterations=e2e["iterations"],
        first_step_s=e2e["first_step_s"],
        **extra,
        end_to_end=e2e,
        model_only=model,
    )


def oom_record(name: str, tags: dict[str, Any], batch: int, exc: BaseException) -> dict[str, Any]:
    """A batch size that did not fit: no numbers, the error's first line."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return {
        "method": name,
        "protocol": "fps",
        "metric": "images_per_s",
        "value": None,
        **tags,
        "batch_size": batch,
        "status": "oom",
        "error": first,
    }


def sweep(
    backend: Backend,
    name: str,
    sizes: list[int],
    image_size: tuple[int, int],
    flops_per_image: float | None,
    peak_gflops: float | None,
    *,
    warmup: int,
    iters: int,
    min_time_s: float,
    buffers: int,
    seed: int = 0,
    clock: Clock = time.perf_counter,
) -> list[dict[str, Any]]:
    """One record per batch size; out-of-memory sizes are recorded and the sweep goes on."""
    tags = {
        "backend": backend.name,
        "precision": backend.precision,
        "device": backend.device,
        **backend.precision_tags(),
    }
    rows = []
    for batch in tqdm(sizes, desc=f"fps {name} {backend.name}", unit="batch size", leave=False):
        try:
            timings = measure_batch(
                backend,
                batch,
                image_size,
                warmup=warmup,
                iters=iters,
                min_time_s=min_time_s,
                buffers=buffers,
                seed=seed,
                clock=clock,
            )
        except Exception as e:
            if not is_oom(e):
                raise
            rows.append(oom_record(name, tags, batch, e))
            print(f"batch {batch}: out of memory, continuing", file=sys.stderr)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        rows.append(batch_record(name, tags, batch, timings, flops_per_image, peak_gflops))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| batch | images/s | p50 ms | p90 ms | p99 ms | model-only images/s | model-only p50 ms "
        "| model-only GFLOP/s | % of peak | first step s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['batch_size']} | {r['status']} | | | | | | | | |")
            continue
        m = r["model_only"]
        gf = f"{m['gflops_per_s']:.1f}" if "gflops_per_s" in m else ""
        frac = f"{100 * m['peak_fraction']:.1f}" if "peak_fraction" in m else ""
        first = f"{r['first_step_s']:.2f}" if r.get("first_step_s") is not None else ""
        lines.append(
            f"| {r['batch_size']} | {r['images_per_s']:.1f} | {r['p50_ms']:.2f} | "
            f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {m['images_per_s']:.1f} | "
            f"{m['p50_ms']:.2f} | {gf} | {frac} | {first} |"
        )
    return "\n".join(lines)


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preflight(
        args,
        files={"--out": args.out},
        dirs={"--out (default)": None if args.out else "results/fps"},
    )
    sizes = batch_sizes(args.batch_sizes)
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if not math.isfinite(args.min_time) or args.min_time < 0:
        raise UserError(f"--min-time must be >= 0 seconds, got {args.min_time}")
    load_start = load_average()
    method = method_from_args(method_item(args.method, args.checkpoint), args)
    name = method.spec.name
    t0 = time.perf_counter()
    options = options_from_args(args)
    backend = create_backend(args.backend, method, options)
    setup_s = time.perf_counter() - t0
    side = args.image_size or (backend.input_size[0] if backend.input_size else 32)
    if backend.input_size and (side, side) != backend.input_size:
        raise UserError(f"the backend takes {backend.input_size} images, not {side}x{side}")

    flops = count_flops(method.as_module(), side)
    peak = measure_peak(backend.device, backend.precision, n=args.peak_size)
    print(
        f"{name} on {backend.name} {backend.precision_tags()['precision_label']} "
        f"{backend.device}: setup {setup_s:.2f} s, "
        f"{(flops or 0) / 1e9:.3f} GFLOP/image, {peak['dtype']} matmul peak "
        f"{peak['gflops_per_s']:.0f} GFLOP/s, load average {load_start}",
        file=sys.stderr,
    )
    rows = sweep(
        backend,
        name,
        sizes,
        (side, side),
        flops,
        peak["gflops_per_s"],
        warmup=args.warmup,
        iters=args.iterations,
        min_time_s=args.min_time,
        buffers=args.buffers,
        seed=args.seed,
    )
    load_end = load_average()
    rows = [{"method": r["method"], "method_id": method.method_id, **r} for r in rows]
    print(format_table(rows))
    stem = setup_stem(name, backend.describe(), options.to_dict())
    out = args.out or f"results/fps/{stem}.json"
    doc = make_results(
        "fps",
        rows,
        config=vars(args),
        method_id=method.method_id,
        method=method.describe(),
        backend=backend.describe(),
        setup_s=setup_s,
        image_size=[side, side],
        flops_per_image=flops,
        flops_counted="torch.utils.flop_counter.FlopCounterMode: matmul, convolution, attention",
        peak=peak,
        load_average={"start": load_start, "end": load_end},
    )
    print(f"wrote {write_json_atomic(out, doc)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
