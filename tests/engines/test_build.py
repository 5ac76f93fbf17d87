import importlib.util
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from engines.build import build_mode, find_methods, plan
from export.__main__ import main as export_main
from imsim.backends.tensorrt_backend import NO_TENSORRT
from imsim.errors import UserError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


needs_trt = pytest.mark.skipif(
    not (HAS_TRT and _has_cuda()), reason="needs TensorRT and a CUDA GPU"
)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    assert export_main(["--method", "pixels", "--out", str(out), "--check-images", "8"]) == 0
    return out


def test_build_mode_per_tensorrt_version():
    # TensorRT 10 before 10.12: FP16 builder flag on the FP32 ONNX, or the FP16 ONNX strongly
    # typed when asked.
    assert build_mode((10, 11), "fp16", "auto") == ("fp32", False, True)
    assert build_mode((10, 0), "fp16", "fp16") == ("fp16", True, False)
    assert build_mode((10, 11), "fp16", "fp32") == ("fp32", False, True)
    # 10.12+ (weak typing deprecated): strongly typed from the FP16 ONNX by default, the flag
    # only when the FP32 ONNX is asked for.
    assert build_mode((10, 12), "fp16", "auto") == ("fp16", True, False)
    assert build_mode((10, 16), "fp16", "auto") == ("fp16", True, False)
    assert build_mode((10, 12), "fp16", "fp32") == ("fp32", False, True)
    # TensorRT 11: no FP16 flag; strongly typed from the FP16 ONNX only.
    assert build_mode((11, 4), "fp16", "auto") == ("fp16", True, False)
    with pytest.raises(UserError, match="TensorRT 11 has no FP16 builder flag"):
        build_mode((11, 0), "fp16", "fp32")
    assert build_mode((10, 12), "fp32", "auto") == ("fp32", False, False)
    assert build_mode((11, 0), "fp32", "auto") == ("fp32", True, False)
    with pytest.raises(UserError, match="fp32 engine is built from the FP32 ONNX"):
        build_mode((10, 9), "fp32", "fp16")


def test_int8_engines_are_built_strongly_typed_from_the_qdq_onnx(tmp_path):
    # Explicit quantization, the same on TensorRT 10 (before and after 10.12) and 11.
    for version in ((10, 0), (10, 9), (10, 12), (11, 0), (11, 4)):
        assert build_mode(version, "int8", "auto") == ("int8", True, False)
        assert build_mode(version, "int8", "int8") == ("int8", True, False)
    for precision, source in (("int8", "fp32"), ("int8", "fp16"), ("fp16", "int8")):
        with pytest.raises(UserError, match="int8 engines are built from the QDQ ONNX"):
            build_mode((10, 12), precision, source)
    # plan() reads M.int8.onnx (checked against its sidecar) and names the engine M.int8.engine.
    from imsim.artifacts import sha256_file, sidecar_path
    from imsim.results import write_json_atomic

    src = tmp_path / "m.int8.onnx"
    src.write_bytes(b"qdq graph")
    side = {"schema": "imsim.onnx/1", "method": "m", "onnx_sha256": sha256_file(src)}
    write_json_atomic(sidecar_path(src), side)
    (job,) = plan(["m"], tmp_path, tmp_path / "engines", "int8", "auto", (10, 9))
    assert job.source == src and job.engine == tmp_path / "engines" / "m.int8.engine"
    assert job.strongly_typed and not job.fp16_flag and job.precision == "int8"
    src.write_bytes(b"changed")
    with pytest.raises(UserError, match="changed since it was exported"):
        plan(["m"], tmp_path, tmp_path / "engines", "int8", "auto", (11, 0))


def test_plan_checks_the_source_onnx(onnx_dir, tmp_path):
    assert find_methods(onnx_dir, "all") == ["pixels"]
    (j10,) = plan(["pixels"], onnx_dir, tmp_path, "fp16", "auto", (10, 9))
    assert j10.source.name == "pixels.onnx" and j10.fp16_flag and not j10.strongly_typed
    assert j10.engine == tmp_path / "pixels.fp16.engine"
    for version in ((10, 12), (11, 0)):
        (job,) = plan(["pixels"], onnx_dir, tmp_path, "fp16", "auto", version)
        assert job.source.name == "pixels.fp16.onnx" and job.strongly_typed and not job.fp16_flag
    with pytest.raises(UserError, match="not found; export it"):
        plan(["triplet"], onnx_dir, tmp_path, "fp16", "auto", (10, 9))
    with pytest.raises(UserError, match="no exported ONNX files"):
        find_methods(tmp_path, "all")


def test_make_engines_without_tensorrt_says_so(onnx_dir, tmp_path):
    if HAS_TRT:
        pytest.skip("TensorRT is installed here")
    cmd = [
        sys.executable,
        "-m",
        "engines.build",
        "--onnx-dir",
        str(onnx_dir),
        "--out",
        str(tmp_path),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode != 0
    assert p.stderr.strip() == f"error: {NO_TENSORRT}"
    assert "TensorRT is not installed here" in NO_TENSORRT
    assert not list(tmp_path.iterdir())
    cmd += ["--opt-batch", "512"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2 and "min <= opt <= max" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """engines.build on a fake TensorRT 10.12 and a fake second GPU (``cuda:1``)."""
    import json

    import torch

    import engines.build as build
    from tests.engines import fake_trt

    made = []

    def require_tensorrt():
        made.append(fake_trt.make("10.12.0.36", **config))
        return made[-1]

    config: dict = {}
    monkeypatch.setattr(build, "require_tensorrt", require_tensorrt)
    monkeypatch.setattr(build, "require_cuda", lambda device: torch.device(device))
    monkeypatch.setattr(build, "gpu_identity", lambda dev: ("Fake H100", "9.0"))
    monkeypatch.setattr(torch.cuda, "device", fake_trt.device)

    def manifest(out):
        return json.loads((out / "pixels.fp16.engine.json").read_text())

    return SimpleNamespace(made=made, config=config, manifest=manifest, engine=fake_trt.ENGINE)


def test_build_runs_on_the_asked_device_with_a_keyed_timing_cache(
    onnx_dir, tmp_path, fake_tensorrt
):
    """Items of the TensorRT review, end to end on a fake TensorRT: the builder runs with
    --device current, FP16 engines are strongly typed from the FP16 ONNX on 10.12, and the timing
    cache is named by TensorRT version and compute capability, then reused."""
    import torch

    from engines.build import main as build_main

    args = ["--onnx-dir", str(onnx_dir), "--out", str(tmp_path), "--device", "cuda:1"]
    assert build_main(args) == 0
    trt = fake_tensorrt.made[-1]
    assert trt.log["built_on"] == [torch.device("cuda", 1)]
    assert (tmp_path / "pixels.fp16.engine").read_bytes() == fake_tensorrt.engine
    cache = tmp_path / "timing-trt10.12.0.36-sm90.cache"
    assert cache.read_bytes() == b"+timings"
    m = fake_tensorrt.manifest(tmp_path)
    assert m["onnx"]["file"] == "pixels.fp16.onnx" and m["build"]["strongly_typed"]
    assert m["build"]["builder_flags"] == []
    assert m["build"]["timing_cache"] == {"file": str(cache), "state": "new", "saved": True}

    assert build_main([*args, "--force"]) == 0  # the second build reads the cache back
    assert fake_tensorrt.made[-1].log["config"].set_cache_calls[0] == (b"+timings", False)
    assert fake_tensorrt.manifest(tmp_path)["build"]["timing_cache"]["state"] == "loaded"


def test_a_rejected_or_missing_timing_cache_never_loses_the_engine(
    onnx_dir, tmp_path, fake_tensorrt, capsys
):
    from engines.build import main as build_main

    cache = tmp_path / "timing-trt10.12.0.36-sm90.cache"
    cache.write_bytes(b"from another GPU")
    fake_tensorrt.config.update(reject={b"from another GPU"}, no_cache=True)
    assert build_main(["--onnx-dir", str(onnx_dir), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "pixels.fp16.engine").read_bytes() == fake_tensorrt.engine
    assert fake_tensorrt.manifest(tmp_path)["build"]["timing_cache"]["state"] == "replaced"
    assert fake_tensorrt.manifest(tmp_path)["build"]["timing_cache"]["saved"] is False
    err = capsys.readouterr().err
    assert "rejected the timing cache" in err and "returned no timing cache" in err


@needs_trt
def test_engine_builds_runs_and_is_refused_when_stale(onnx_dir, tmp_path):
    from engines.build import main as build_main
    from imsim.backends import BackendOptions, create_backend
    from imsim.methods import create_method
    from imsim.parity import tensor_metrics

    assert (
        build_main(
            [
                "--onnx-dir",
                str(onnx_dir),
                "--out",
                str(tmp_path),
                "--max-batch",
                "8",
                "--opt-batch",
                "4",
            ]
        )
        == 0
    )
    assert list(tmp_path.glob("timing-trt*-sm*.cache"))
    method = create_method("pixels")
    opts = BackendOptions(
        precision="fp16", device="cuda", onnx_dir=str(onnx_dir), engine_dir=str(tmp_path)
    )
    trt_backend = create_backend("trt", method, opts)
    x = np.random.default_rng(0).integers(0, 256, (19, 32, 32, 3), dtype=np.uint8)  # > max batch
    out = trt_backend.embed(x)
    assert out.shape == (19, 192)
    assert tensor_metrics(method.embed(x), out)["cosine_min"] >= 0.999
    with open(onnx_dir / "pixels.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="changed since"):
        create_backend("trt", method, opts)
