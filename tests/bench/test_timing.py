import numpy as np
import pytest
import torch

from bench.timing import is_oom, latency_stats, time_steps


class FakeClock:
    """A clock that only moves when a step says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


def test_warmup_steps_are_kept_apart_and_sync_wraps_every_step():
    clock = FakeClock()
    durations = [9.0, 4.0, 0.1, 0.2, 0.3, 0.4]
    seen, syncs = [], []

    def step(i):
        seen.append(i)
        syncs.append(("step", i))
        clock.advance(durations[i])

    t = time_steps(step, warmup=2, iters=4, sync=lambda: syncs.append("sync"), clock=clock)
    assert t.warmup_s == [9.0, 4.0]
    np.testing.assert_allclose(t.times_s, [0.1, 0.2, 0.3, 0.4])
    assert seen == [0, 1, 2, 3, 4, 5]  # i counts warm-up steps too (buffer rotation)
    assert syncs[:3] == ["sync", ("step", 0), "sync"] and syncs.count("sync") == 12


def test_min_time_adds_steps_up_to_the_cap():
    clock = FakeClock()
    t = time_steps(lambda i: clock.advance(0.125), warmup=0, iters=3, min_time_s=1, clock=clock)
    assert len(t.times_s) == 8  # 3 were asked for, 1 s of 0.125 s steps needs 8
    clock = FakeClock()
    t = time_steps(
        lambda i: clock.advance(0.01), warmup=1, iters=3, min_time_s=5, max_iters=7, clock=clock
    )
    assert len(t.times_s) == 7 and len(t.warmup_s) == 1
    with pytest.raises(ValueError):
        time_steps(lambda i: None, warmup=0, iters=0)


def test_latency_statistics_on_known_times():
    times = [i / 1000 for i in range(1, 101)]  # 1 .. 100 ms
    s = latency_stats(times, batch_size=32)
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["min_ms"] == pytest.approx(1.0) and s["max_ms"] == pytest.approx(100.0)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["images_per_s"] == pytest.approx(32 / 0.0505)
    assert s["images_per_s_mean"] == pytest.approx(32 * 100 / 5.05)
    assert s["iterations"] == 100
    # One slow outlier moves the mean-based throughput, not the median-based one.
    s2 = latency_stats([0.01] * 9 + [1.0], batch_size=10)
    assert s2["images_per_s"] == pytest.approx(1000.0)
    assert s2["images_per_s_mean"] == pytest.approx(100 / 1.09)
    with pytest.raises(ValueError):
        latency_stats([], 1)


def test_out_of_memory_is_recognized_and_other_errors_are_not():
    assert is_oom(MemoryError())
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(
        RuntimeError(
            "DefaultCPUAllocator: can't allocate memory: you tried... Cannot allocate memory"
        )
    )

    class Fail(Exception):  # onnxruntime's own exception type name
        pass

    assert is_oom(Fail("[ONNXRuntimeError] : 6 : Failed to allocate memory for requested buffer"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))  # not an error type allocation raises
