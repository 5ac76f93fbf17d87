import json

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench import fps
from export.__main__ import main as export_main
from imsim.backends import BackendOptions, create_backend, options_from_args
from imsim.backends.setup import setup_stem
from imsim.errors import UserError
from imsim.hardware import forced
from imsim.methods import create_method
from tests import nets
from tests.bench.test_timing import FakeClock
from tests.machines import ZEN5


@pytest.fixture
def registered(monkeypatch):
    nets.register(monkeypatch)


def fake_timed(backend, clock, first=7.0, then=0.25, oom_from=None):
    """Make ``run_prepared`` advance the fake clock: ``first`` s for the first call of each
    batch size (a compile), ``then`` s afterwards; batches >= ``oom_from`` run out of memory."""
    real = backend.run_prepared
    calls: list[tuple[int, int]] = []

    def run_prepared(x):
        n = len(x)
        if oom_from is not None and n >= oom_from:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        clock.advance(first if not any(b == n for b, _ in calls) else then)
        calls.append((n, x.data_ptr()))
        return real(x)

    backend.run_prepared = run_prepared
    return calls


def test_measure_batch_excludes_warmup_and_rotates_buffers(registered):
    backend = create_backend("torch", create_method("test-convnet"), BackendOptions())
    clock = FakeClock()
    calls = fake_timed(backend, clock)
    t = fps.measure_batch(
        backend, 4, (32, 32), warmup=2, iters=6, min_time_s=0, buffers=3, clock=clock
    )
    for mode in ("end_to_end", "model_only"):
        m = t[mode]
        assert m["p50_ms"] == pytest.approx(250.0) and m["p99_ms"] == pytest.approx(250.0)
        assert m["images_per_s"] == pytest.approx(16.0) and m["iterations"] == 6
    # The compile-like first step is reported apart and never reaches the statistics.
    assert t["end_to_end"]["first_step_s"] == pytest.approx(7.0)
    assert t["end_to_end"]["warmup_s"] == pytest.approx(7.25)
    assert t["model_only"]["first_step_s"] == pytest.approx(0.25)
    # Model-only steps rotate among 3 prepared inputs: 3 distinct buffers, each reused.
    model_ptrs = [p for _, p in calls[8:]]
    assert len(model_ptrs) == 8 and len(set(model_ptrs)) == 3
    assert model_ptrs[0] == model_ptrs[3] != model_ptrs[1]


def test_out_of_memory_is_recorded_and_the_sweep_goes_on(registered):
    backend = create_backend("torch", create_method("test-convnet"), BackendOptions())
    clock = FakeClock()
    fake_timed(backend, clock, first=1.0, then=0.5, oom_from=16)
    rows = fps.sweep(
        backend,
        "test-convnet",
        [4, 16, 64, 2],
        (32, 32),
        8e6,
        100.0,
        warmup=1,
        iters=3,
        min_time_s=0,
        buffers=2,
        clock=clock,
    )
    assert [(r["batch_size"], r["status"]) for r in rows] == [
        (4, "ok"),
        (16, "oom"),
        (64, "oom"),
        (2, "ok"),
    ]
    oom = rows[1]
    assert oom["value"] is None and "images_per_s" not in oom and "out of memory" in oom["error"]
    ok = rows[3]
    assert ok["images_per_s"] == pytest.approx(4.0)  # 2 images / 0.5 s
    # GFLOP/s from the counted FLOPs, and the fraction of the given peak.
    assert ok["model_only"]["gflops_per_s"] == pytest.approx(4.0 * 8e6 / 1e9)
    assert ok["model_only"]["peak_fraction"] == pytest.approx(4.0 * 8e6 / 1e9 / 100.0)
    table = fps.format_table(rows)
    assert "| 16 | oom |" in table and "| 2 | 4.0 | 500.00 |" in table


def test_other_errors_stop_the_sweep(registered):
    backend = create_backend("torch", create_method("test-convnet"), BackendOptions())

    def broken(x):
        raise RuntimeError("shape mismatch")

    backend.run_prepared = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        fps.sweep(
            backend, "x", [2], (32, 32), None, None, warmup=0, iters=1, min_time_s=0, buffers=1
        )


def test_flops_are_counted_exactly_on_a_known_network(registered):
    # 3x3 convs 3->16 at 40x40, 16->32 and 32->64 at stride 2, then a 64->32 linear head.
    expected = 2 * (3 * 16 * 9 * 40 * 40 + 16 * 32 * 9 * 20 * 20 + 32 * 64 * 9 * 10 * 10 + 64 * 32)
    assert fps.count_flops(create_method("test-convnet").as_module(), 32) == expected
    assert fps.count_flops(create_method("pixels").as_module(), 32) is None


def test_peak_is_a_matmul_rate_in_the_run_precision():
    clock = FakeClock()
    times = iter([1.0, 1.0, 0.5, 0.25, 0.5])

    real_mm = torch.mm

    def mm(a, b):
        clock.advance(next(times, 1.0))
        return real_mm(a, b)

    torch.mm = mm
    try:
        with forced(ZEN5):
            peak = fps.measure_peak("cpu", "bf16", n=64, iters=3, clock=clock)
    finally:
        torch.mm = real_mm
    assert peak["dtype"] == "bfloat16" and peak["matmul"] == "64x64 @ 64x64"
    assert peak["gflops_per_s"] == pytest.approx(2 * 64**3 / 0.25 / 1e9)  # the best step
    assert peak["gflops_per_s_median"] == pytest.approx(2 * 64**3 / 0.5 / 1e9)


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # --threads sets torch's process-wide pool


def test_command_writes_one_record_per_batch_size(registered, keep_threads, tmp_path, capsys):
    out = tmp_path / "fps.json"
    argv = [
        "--backend",
        "torch",
        "--method",
        "test-convnet",
        "--batch-sizes",
        "1,8",
        "--precision",
        "bf16",
        "--iterations",
        "2",
        "--min-time",
        "0",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--peak-size",
        "128",
        "--out",
        str(out),
    ]
    with forced(ZEN5):  # a CPU with native bf16: the peak is a bf16 matmul
        assert fps.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "imsim.results/1" and doc["kind"] == "fps"
    assert [r["batch_size"] for r in doc["results"]] == [1, 8]
    for r in doc["results"]:
        assert {"batch_size", "images_per_s", "p50_ms", "p90_ms", "p99_ms"} <= set(r)
        assert r["method"] == "test-convnet" and r["backend"] == "torch"
        assert r["precision"] == "bf16" and r["device"] == "cpu" and r["status"] == "ok"
        assert r["value"] == r["images_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert r["model_only"]["iterations"] == 2 and r["first_step_s"] > 0
        assert r["gflops_per_s"] == pytest.approx(r["images_per_s"] * doc["flops_per_image"] / 1e9)
    assert doc["flops_per_image"] == fps.count_flops(create_method("test-convnet").as_module(), 32)
    assert doc["peak"]["dtype"] == "bfloat16" and doc["peak"]["gflops_per_s"] > 0
    assert doc["peak"]["matmul"] == "128x128 @ 128x128"
    assert doc["backend"]["threads"] == 1 and doc["env"]["torch_threads"] == 1
    assert len(doc["load_average"]["start"]) == 3 and doc["setup_s"] >= 0
    assert {"cpu", "cpu_flags", "git_commit", "packages"} <= set(doc["env"])
    assert "| 8 |" in capsys.readouterr().out


def test_onnxruntime_runs_through_the_same_steps(registered, tmp_path):
    assert (
        export_main(["--method", "test-convnet", "--out", str(tmp_path), "--check-images", "4"])
        == 0
    )
    method = create_method("test-convnet")
    backend = create_backend("onnxruntime", method, BackendOptions(onnx_dir=str(tmp_path)))
    x = nets.images(3)
    y = backend.fetch(backend.run_prepared(backend.prepare(x)))
    np.testing.assert_allclose(y, backend.embed(x), atol=0)
    np.testing.assert_allclose(y, method.embed(x), atol=1e-5)
    rows = fps.sweep(
        backend,
        "test-convnet",
        [2],
        (32, 32),
        None,
        None,
        warmup=1,
        iters=2,
        min_time_s=0,
        buffers=2,
    )
    assert rows[0]["status"] == "ok" and rows[0]["backend"] == "onnxruntime"
    args = fps.build_parser().parse_args(
        ["--method", "x", "--backend", "onnxruntime", "--threads", "2"]
    )
    options = options_from_args(args).to_dict()
    stem = setup_stem("clip[random-weights]", backend.describe(), options)
    assert stem == "clip-random-weights-onnxruntime-t2-fp32-cpu"


def test_bad_arguments_are_one_line_errors(registered):
    for sizes in ("0,8", "a,b", ""):
        with pytest.raises(UserError, match="--batch-sizes"):
            fps.main(["--backend", "torch", "--method", "test-convnet", "--batch-sizes", sizes])
    with pytest.raises(UserError, match="not a single network"):
        fps.main(["--backend", "torch", "--method", "color-hist", "--batch-sizes", "1"])
    with pytest.raises(UserError, match="--warmup must be >= 0"):
        fps.main(["--backend", "torch", "--method", "pixels", "--warmup", "-1"])
    with pytest.raises(UserError, match="--min-time"):
        fps.main(["--backend", "torch", "--method", "pixels", "--min-time", "nan"])


def test_flops_count_attention_on_the_fast_path_too(registered):
    # test-vit: nn.MultiheadAttention, whose inference fast path the counter cannot see.
    module = create_method("test-vit").as_module()
    w, n, patch = 64, 17, 8  # width, tokens (16 patches + class token), patch side
    attn = 2 * (n * w * 3 * w + n * w * w + 2 * n * n * w)  # qkv, out projection, QK^T and AV
    mlp = 2 * n * w * 4 * w * 2
    expected = 2 * 16 * 3 * patch * patch * w + attn + mlp + 2 * w * 48
    assert torch.backends.mha.get_fastpath_enabled()
    assert fps.count_flops(module, 32) == expected
    assert torch.backends.mha.get_fastpath_enabled()  # restored
    # Whichever attention kernel this machine would pick (CPU flash attention is one op the
    # counter does not see; some CPUs pick it, others the math kernel), the count is the same.
    for kernels in ([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH], [SDPBackend.MATH]):
        with sdpa_kernel(kernels):
            assert fps.count_flops(module, 32) == expected


class _BareAttention(torch.nn.Module):
    """``scaled_dot_product_attention`` on 4 heads of 16 tokens x 8 channels per image."""

    def forward(self, x):
        q = x.float().reshape(len(x), 4, 16, -1)[..., :8]
        return torch.nn.functional.scaled_dot_product_attention(q, q, q).flatten(1)


def test_flops_of_a_bare_attention_call_do_not_depend_on_the_kernel():
    expected = 2 * 2 * (4 * 16 * 16 * 8)  # QK^T and AV, per image
    for kernels in ([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH], [SDPBackend.MATH]):
        with sdpa_kernel(kernels):
            assert fps.count_flops(_BareAttention(), 16) == expected


def test_fp16_peak_on_a_cpu_without_fp16_math_is_the_fp32_rate():
    with forced(ZEN5):
        peak = fps.measure_peak("cpu", "fp16", n=64, iters=2)
        assert peak["dtype"] == "float32" and "fp16 is emulated" in peak["note"]
        assert fps.measure_peak("cpu", "bf16", n=64, iters=2)["dtype"] == "bfloat16"


def test_trt_needs_no_precision_to_find_the_engine_make_engines_builds():
    from engines.build import build_parser as engines_parser
    from imsim.backends import backend_class
    from imsim.cli import preflight

    args = fps.build_parser().parse_args(["--backend", "trt", "--method", "pixels"])
    assert args.precision is None
    preflight(args)  # each backend owns its default precision
    built = engines_parser().parse_args([]).precision
    assert args.precision == built == backend_class("trt").default_precision == "fp16"
    assert options_from_args(args).precision == "fp16"
    ort = fps.build_parser().parse_args(["--backend", "onnxruntime", "--method", "pixels"])
    assert options_from_args(ort).precision == "fp32"  # resolved even without preflight
    preflight(ort)
    assert ort.precision == "fp32"
