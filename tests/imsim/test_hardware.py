"""The capability probe, and what each capability combination makes the toolkit do: training's
``--amp auto``, ``make bench``'s sweep, peaks, and the labels results carry."""

import json

import pytest
import torch

from bench import fps
from bench.report import device_label
from bench.setups import CPU_SETUPS, default_setups
from bench.setups import main as setups_main
from imsim import hardware
from imsim.backends import BackendOptions, create_backend
from imsim.backends.setup import setup_label
from imsim.hardware import Capabilities, capabilities, forced
from imsim.methods import create_method
from imsim.results import environment
from tests import nets
from tests.machines import A100, P100, SKYLAKE, T4, XEON_AMX, ZEN3, ZEN5
from train.loop import amp_dtype

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.fixture
def registered(monkeypatch):
    nets.register(monkeypatch)


@pytest.mark.parametrize(
    ("caps", "native"),
    [
        (XEON_AMX, ["fp32", "fp16", "bf16"]),
        (ZEN5, ["fp32", "bf16"]),
        (ZEN3, ["fp32"]),
        (SKYLAKE, ["fp32"]),  # oneDNN runs bf16 on plain AVX-512 by conversion: not native
        (A100, ["fp32", "fp16", "bf16"]),
        (T4, ["fp32", "fp16"]),
        (P100, ["fp32"]),
    ],
)
def test_native_precisions_and_labels(caps, native):
    assert caps.native_precisions() == native
    for p in ("fp32", "fp16", "bf16"):
        assert caps.label(p) == (p if p in native else f"{p} (emulated)")
    d = caps.to_dict()
    assert d["native"] == native and d["kind"] == caps.kind and d["name"] == caps.name
    # Each kind records only its own fields.
    assert ("isa" in d) == (caps.kind == "cpu") and ("cuda_bf16" in d) == (caps.kind == "cuda")
    with pytest.raises(ValueError, match="unknown precision"):
        caps.native("fp8")


@pytest.mark.parametrize(
    ("caps", "int8"),
    [
        (XEON_AMX, True),  # VNNI
        (ZEN5, True),  # VNNI
        (ZEN3, True),  # AVX2's 8-bit multiply-add, no VNNI
        (SKYLAKE, True),  # AVX-512 without VNNI: the same multiply-add, wider
        (Capabilities(kind="cpu", name="old x86", isa="DEFAULT"), False),
        (Capabilities(kind="cpu", name="unprobed"), False),
        (A100, True),
        (T4, True),
        (Capabilities(kind="cuda", name="GTX 1080", compute_capability=(6, 1)), True),  # DP4A
        (P100, False),  # compute capability 6.0: no DP4A
    ],
)
def test_native_int8(caps, int8):
    assert caps.native("int8") is int8
    assert caps.label("int8") == ("int8" if int8 else "int8 (emulated)")
    # int8 is not one of the float precisions a sweep or a result's "native" list names.
    assert "int8" not in caps.native_precisions()


@pytest.mark.parametrize(
    ("caps", "device", "expected"),
    [
        (XEON_AMX, CPU, torch.bfloat16),
        (ZEN5, CPU, torch.bfloat16),
        (ZEN3, CPU, None),
        (SKYLAKE, CPU, None),
        (A100, CUDA, torch.bfloat16),
        (T4, CUDA, torch.float16),  # no native bf16: fp16 with loss scaling, never emulated bf16
        (P100, CUDA, None),
    ],
)
def test_amp_auto_picks_only_native_precisions(caps, device, expected, capsys):
    with forced(caps):
        assert amp_dtype("auto", device) is expected
        assert amp_dtype("off", device) is None
    assert capsys.readouterr().err == ""  # auto never warns: it never picks an emulated one


def test_amp_asked_for_explicitly_runs_with_one_warning(capsys):
    with forced(ZEN3):
        assert amp_dtype("bf16", CPU) is torch.bfloat16
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bf16" in err[0] and "only emulates it" in err[0]
    with forced(ZEN5):
        assert amp_dtype("bf16", CPU) is torch.bfloat16
    assert capsys.readouterr().err == ""
    with forced(T4):
        assert amp_dtype("bf16", CUDA) is torch.bfloat16
    assert "Tesla T4" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("caps", "fps_setups", "parity_extra"),
    [
        (
            XEON_AMX,
            [f"{b}:{p}" for b, p in CPU_SETUPS],  # everything native: every setup
            [],
        ),
        (ZEN5, ["torch:bf16", "onnxruntime:fp32", "openvino:fp32", "openvino:bf16"], ["fp16"]),
        (ZEN3, ["onnxruntime:fp32", "openvino:fp32"], ["fp16"]),
    ],
)
def test_bench_sweep_never_picks_an_emulated_precision(caps, fps_setups, parity_extra, capsys):
    as_text = lambda setups: [f"{b}:{p}" for b, p in setups]  # noqa: E731
    assert as_text(default_setups(caps, "fps")) == fps_setups
    parity = as_text(default_setups(caps, "parity"))
    # Parity always checks the FP16 ONNX (the graph TensorRT builds), emulated or not.
    assert "onnxruntime:fp16" in parity
    assert sorted(set(parity) - set(fps_setups)) == [f"onnxruntime:{p}" for p in parity_extra]
    with forced(caps):
        assert setups_main(["fps"]) == 0
    assert capsys.readouterr().out.split() == fps_setups
    with pytest.raises(ValueError, match="purpose"):
        default_setups(caps, "train")


def test_peak_of_an_emulated_precision_is_the_fp32_rate():
    with forced(ZEN3):
        peak = fps.measure_peak("cpu", "bf16", n=64, iters=2)
        assert peak["dtype"] == "float32" and "bf16 is emulated on AMD EPYC Zen 3" in peak["note"]
        assert fps.measure_peak("cpu", "fp32", n=64, iters=2)["dtype"] == "float32"
    with forced(ZEN5):
        peak = fps.measure_peak("cpu", "bf16", n=64, iters=2)
        assert peak["dtype"] == "bfloat16" and "note" not in peak
        assert fps.measure_peak("cpu", "fp16", n=64, iters=2)["dtype"] == "float32"
    with forced(XEON_AMX):
        assert fps.measure_peak("cpu", "fp16", n=64, iters=2)["dtype"] == "float16"
        # int8 (native here) has no peak of its own: runs are compared with the fp32 rate.
        peak = fps.measure_peak("cpu", "int8", n=64, iters=2)
        assert peak["dtype"] == "float32" and "int8 runs are compared with the fp32" in peak["note"]


def test_backends_label_an_emulated_precision_and_warn_once(registered, capsys):
    method = create_method("test-convnet")
    with forced(ZEN3):
        b = create_backend("torch", method, BackendOptions(precision="bf16"))
        d = b.describe()
        assert d["precision"] == "bf16" and d["precision_label"] == "bf16 (emulated)"
        assert d["precision_native"] is False and setup_label(d) == "torch bf16 (emulated)"
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "backend 'torch' runs bf16 (emulated) on AMD EPYC Zen 3" in err[0]
        assert "only emulates it" in err[0]
        fp32 = create_backend("torch", method, BackendOptions())
        assert fp32.describe()["precision_label"] == "fp32" and capsys.readouterr().err == ""
    with forced(ZEN5):
        d = create_backend("torch", method, BackendOptions(precision="bf16")).describe()
        assert d["precision_label"] == "bf16" and d["precision_native"] is True
        assert setup_label(d) == "torch bf16" and capsys.readouterr().err == ""


def test_fps_results_name_an_emulated_precision(registered, tmp_path):
    out = tmp_path / "fps.json"
    argv = ["--backend", "torch", "--method", "test-convnet", "--precision", "bf16"]
    argv += ["--batch-sizes", "2", "--iterations", "1", "--min-time", "0", "--warmup", "0"]
    argv += ["--peak-size", "64", "--threads", "1", "--out", str(out)]
    n = torch.get_num_threads()
    try:
        with forced(ZEN3):
            assert fps.main(argv) == 0
    finally:
        torch.set_num_threads(n)
    doc = json.loads(out.read_text())
    (row,) = doc["results"]
    assert row["precision"] == "bf16" and row["precision_label"] == "bf16 (emulated)"
    assert row["precision_native"] is False and doc["peak"]["dtype"] == "float32"
    assert doc["peak"]["matmul"] == "64x64 @ 64x64"
    assert doc["env"]["hardware"]["cpu"]["name"] == "AMD EPYC Zen 3"
    assert doc["env"]["hardware"]["cpu"]["native"] == ["fp32"]


def test_the_real_probe_agrees_with_torch():
    caps = capabilities("cpu")
    assert caps is capabilities(CPU)  # probed once
    assert caps.kind == "cpu" and caps.isa == torch.backends.cpu.get_cpu_capability()
    if caps.native_bf16:  # native bf16 implies oneDNN's bf16 path is on
        assert torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if caps.isa == "AVX2":  # AVX2 kernels: no AVX-512, so no AVX512-BF16 either
        assert not caps.avx512_bf16
    assert environment()["hardware"]["cpu"] == caps.to_dict()
    with forced(ZEN3):
        assert capabilities("cpu") is ZEN3
        with forced(ZEN5):
            assert capabilities("cpu") is ZEN5
        assert capabilities("cpu") is ZEN3
    assert capabilities("cpu") is caps
    assert not hardware._forced


def test_warn_if_emulated(capsys):
    with forced(T4):
        assert hardware.warn_if_emulated("fp16", "cuda:0", "x") is True
        assert hardware.warn_if_emulated("bf16", "cuda:0", "x") is False
    assert capsys.readouterr().err.count("\n") == 1


def test_report_tells_cpus_of_one_name_apart():
    def doc(caps):
        env = {"cpu": "AMD EPYC", "torch_threads": 2, "hardware": {"cpu": caps.to_dict()}}
        return {"env": env, "backend": {"backend": "torch"}}

    assert device_label(doc(ZEN3)) == "CPU AMD EPYC (AVX2, native fp32, 2 threads)"
    assert device_label(doc(ZEN5)) == "CPU AMD EPYC (AVX512, native fp32/bf16, 2 threads)"
    # Files written before the probe existed keep their old label.
    assert (
        device_label({"env": {"cpu": "AMD EPYC", "torch_threads": 2}}) == "CPU AMD EPYC (2 threads)"
    )
