"""The timing core of ``bench.fps``: timed steps, their statistics, and out-of-memory detection.

Nothing here knows about models: a step is any callable, the clock and the device
synchronization are parameters, so tests drive it with a fake clock and no timing assertions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Clock = Callable[[], float]


def _no_sync() -> None:
    return None


@dataclass
class StepTimes:
    """Durations in seconds: the warm-up steps (kept apart, never in the statistics) and the
    timed steps."""

    warmup_s: list[float] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)


def time_steps(
    step: Callable[[int], object],
    *,
    warmup: int,
    iters: int,
    min_time_s: float = 0.0,
    max_iters: int = 10_000,
    sync: Callable[[], None] = _no_sync,
    clock: Clock = time.perf_counter,
) -> StepTimes:
    """Run ``step(i)`` for ``warmup`` untimed-for-statistics steps, then timed steps.

    Timed steps go on until there are at least ``iters`` of them and they add up to at least
    ``min_time_s`` (so a fast model gets enough samples for a p99), but never past
    ``max_iters``. ``sync`` runs before and after each step, inside nothing else, so queued
    device work is neither charged to the next step nor left out of this one. ``i`` counts all
    steps (warm-up included): callers rotate input buffers with ``i % n``.
    """
    if warmup < 0 or iters < 1 or max_iters < iters:
        raise ValueError(f"need warmup >= 0 and 1 <= iters <= max_iters, got {warmup}, {iters}")
    out = StepTimes()
    i = 0

    def one() -> float:
        nonlocal i
        sync()
        t0 = clock()
        step(i)
        sync()
        i += 1
        return clock() - t0

    for _ in range(warmup):
        out.warmup_s.append(one())
    while len(out.times_s) < iters or (
        sum(out.times_s) < min_time_s and len(out.times_s) < max_iters
    ):
        out.times_s.append(one())
    return out


def latency_stats(times_s: list[float], batch_size: int) -> dict[str, float | int]:
    """Latency percentiles (ms, linear interpolation) and throughput of one batch size.

    ``images_per_s`` is the batch size over the median step time (robust to the odd step
    slowed down by something else on the machine); ``images_per_s_mean`` is all images over
    all time.
    """
    if not times_s:
        raise ValueError("no timed steps")
    t = np.asarray(times_s, dtype=np.float64)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {
        "images_per_s": float(batch_size / p50),
        "images_per_s_mean": float(batch_size * len(t) / t.sum()),
        "p50_ms": float(1e3 * p50),
        "p90_ms": float(1e3 * p90),
        "p99_ms": float(1e3 * p99),
        "mean_ms": float(1e3 * t.mean()),
        "min_ms": float(1e3 * t.min()),
        "max_ms": float(1e3 * t.max()),
        "iterations": len(t),
    }


ORT_ERRORS = ("Fail", "RuntimeException", "EPFail")
OOM_MESSAGES = ("out of memory", "failed to allocate memory", "cannot allocate memory")


def is_oom(exc: BaseException) -> bool:
    """Whether an exception means the batch did not fit in memory (host or device)."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:
        pass
    said_so = any(m in str(exc).lower() for m in OOM_MESSAGES)
    # ONNX Runtime raises its own exception types (not RuntimeError subclasses).
    return said_so and (isinstance(exc, RuntimeError | OSError) or type(exc).__name__ in ORT_ERRORS)
