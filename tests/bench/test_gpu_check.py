"""``make gpu-check`` up to where it needs a GPU: the one-line exit without one, the plan per GPU
(forced capabilities), the step bookkeeping and the summary; the whole run on the CPU (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import gpu_check
from bench.gpu_check import Check, Setup, plan_setups, summary_markdown
from imsim.hardware import capabilities, forced
from tests.machines import A100, P100, T4

NO_TRT = "TensorRT is not installed (pip install 'imsim[trt]')"


def _names(plan) -> list[str]:
    return [s.name for s in plan.setups]


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "results"
    assert gpu_check.main(["--out", str(out), "--work", str(tmp_path / "work")]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("gpu-check: no CUDA GPU here")
    assert not out.exists() and not (tmp_path / "work").exists()


@pytest.mark.slow  # a fresh interpreter importing torch: seconds
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_the_command_line_without_a_gpu(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and p.stdout == ""
    assert p.stderr.strip() == gpu_check.no_gpu_line() and "Traceback" not in p.stderr


def test_a_t4_sweeps_no_bf16():
    with forced(T4):
        plan = plan_setups(capabilities("cuda"), ort_cuda=True, tensorrt=None)
    assert _names(plan) == [
        "torch-fp32",
        "torch-fp16",
        "torch-fp16-compile",
        "onnxruntime-cuda-fp32",
        "onnxruntime-cuda-fp16",
        "trt-fp16",
    ]
    assert plan.skipped == [("torch bf16", "Tesla T4 has no native bf16")]


def test_an_a100_sweeps_bf16_and_compiles_it():
    with forced(A100):
        plan = plan_setups(capabilities("cuda"), ort_cuda=False, tensorrt=NO_TRT)
    assert _names(plan) == ["torch-fp32", "torch-fp16", "torch-bf16", "torch-bf16-compile"]
    assert [w for w, _ in plan.skipped] == ["onnxruntime cuda", "trt"]
    assert dict(plan.skipped)["trt"] == NO_TRT


def test_a_p100_runs_fp32_only():
    with forced(P100):
        plan = plan_setups(capabilities("cuda"), ort_cuda=True, tensorrt=None)
    assert _names(plan) == ["torch-fp32", "torch-fp32-compile", "onnxruntime-cuda-fp32", "trt-fp32"]
    assert {w for w, _ in plan.skipped} == {"torch fp16", "torch bf16"}


def test_setups_parity_and_batch_sizes():
    assert not Setup("torch", "fp32").parity  # the reference itself
    assert Setup("torch", "fp32", compile=True).parity and Setup("trt", "fp16").parity
    assert Setup("torch", "bf16", compile=True).batch_sizes == (256,)
    assert Setup("onnxruntime", "fp16", provider="cuda").batch_sizes == (1, 32, 256)
    assert gpu_check.PARITY_BATCH and 1000 % gpu_check.PARITY_BATCH == 0


def test_steps_record_failures_and_the_time_budget(tmp_path, capsys):
    check = Check("cuda", tmp_path, tmp_path, budget_s=60.0)
    with check.step("works") as entry:
        entry["x"] = 1
    with check.step("breaks"):
        raise ValueError("engine not found\nsecond line")
    assert check.due("next")
    check.t0 = time.perf_counter() - 61.0
    assert not check.due("late")
    statuses = [(s["step"], s["status"]) for s in check.steps]
    assert statuses == [("works", "ok"), ("breaks", "failed"), ("late", "skipped")]
    assert check.steps[0]["x"] == 1 and check.steps[1]["error"] == "engine not found"
    assert "time budget of 60 s spent" in check.steps[2]["note"]
    assert "gpu-check: breaks: FAILED (engine not found)" in capsys.readouterr().err


def test_summary_markdown():
    setups = [
        {"setup": "torch-fp32", "precision_label": "fp32", "images_per_s": {"1": 812.4, "32": 9e3}},
        {
            "setup": "trt-fp16",
            "precision_label": "fp16",
            "parity": "PASS",
            "cosine_min": 0.99999123,
            "images_per_s": {"1": 2500.0, "32": 41234.5},
        },
    ]
    steps = [
        {"step": "train", "status": "ok", "seconds": 12.5},
        {"step": "trt", "status": "skipped", "note": "why"},
    ]
    md = summary_markdown("NVIDIA H100", steps, setups)
    assert md.startswith("# gpu-check on NVIDIA H100\n")
    assert "| setup | precision | parity | cosine min | images/s b1 | images/s b32 |" in md
    assert "| torch-fp32 | fp32 | reference |  | 812 | 9,000 |" in md
    assert "| trt-fp16 | fp16 | PASS | 0.9999912 | 2,500 | 41,234 |" in md
    assert "| train | ok | 12.5 |  |" in md and "| trt | skipped |  | why |" in md
    assert gpu_check.gpu_folder(Path("results/gpu"), "NVIDIA H100 80GB HBM3") == Path(
        "results/gpu/nvidia-h100-80gb-hbm3"
    )


@pytest.mark.slow
def test_the_whole_check_runs_on_the_cpu(tmp_path):
    """Every step but TensorRT and ONNX Runtime CUDA, on the CPU with tiny sizes: the code a GPU
    machine runs first must not meet its first bug there."""
    from tests.train.conftest import make_tiny
    from tests.train.test_loop import _write_imagefolder

    _write_imagefolder(make_tiny(), tmp_path / "data")
    spec = f"imagefolder:{tmp_path / 'data'}"
    from imsim.data import load_dataset

    ds = load_dataset(spec)
    caps = capabilities("cpu")
    plan = gpu_check.Plan(
        [Setup("torch", "fp32"), Setup("torch", "fp32", compile=True)],
        [("trt", NO_TRT)],
    )
    check = Check("cpu", tmp_path / "out", tmp_path / "work", 600.0, data=spec, peak_size=128)
    recipe = {"samples_per_epoch": 64, "batch_size": 32}
    assert gpu_check.run_check(check, caps, plan, ds, recipe, epochs=2) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {s["step"]: s["status"] for s in summary["results"]}
    assert status == {
        "trt": "skipped",
        "train": "ok",
        "export": "ok",
        "torch-fp32": "ok",
        "torch-fp32-compile": "ok",
    }, summary["results"]
    train = json.loads((tmp_path / "out" / "train.json").read_text())
    resumed = next(r for r in train["results"] if r["metric"] == "resume_bit_identical")
    assert resumed["value"] == 1.0  # deterministic on the CPU
    parity = json.loads((tmp_path / "out" / "parity-torch-fp32-compile.json").read_text())
    assert parity["kind"] == "parity" and parity["passed"]
    fps = json.loads((tmp_path / "out" / "fps-torch-fp32.json").read_text())
    assert [r["batch_size"] for r in fps["results"]] == [1, 32, 256]
    assert (tmp_path / "work" / "onnx" / "triplet.fp16.onnx").is_file()
    md = (tmp_path / "out" / "SUMMARY.md").read_text()
    assert "| torch-fp32-compile | fp32 | PASS |" in md
