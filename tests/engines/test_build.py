import importlib.util
import subprocess
import sys

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
    # TensorRT 10: FP16 builder flag on the FP32 ONNX, or the FP16 ONNX strongly typed.
    assert build_mode(10, "fp16", "auto") == ("fp32", False, True)
    assert build_mode(10, "fp16", "fp16") == ("fp16", True, False)
    # TensorRT 11: no FP16 flag; strongly typed from the FP16 ONNX only.
    assert build_mode(11, "fp16", "auto") == ("fp16", True, False)
    with pytest.raises(UserError, match="TensorRT 11 has no FP16 builder flag"):
        build_mode(11, "fp16", "fp32")
    assert build_mode(10, "fp32", "auto") == ("fp32", False, False)
    assert build_mode(11, "fp32", "auto") == ("fp32", True, False)
    with pytest.raises(UserError, match="fp32 engine is built from the FP32 ONNX"):
        build_mode(10, "fp32", "fp16")


def test_plan_checks_the_source_onnx(onnx_dir, tmp_path):
    assert find_methods(onnx_dir, "all") == ["pixels"]
    (j10,) = plan(["pixels"], onnx_dir, tmp_path, "fp16", "auto", 10)
    assert j10.source.name == "pixels.onnx" and j10.fp16_flag and not j10.strongly_typed
    assert j10.engine == tmp_path / "pixels.fp16.engine"
    (j11,) = plan(["pixels"], onnx_dir, tmp_path, "fp16", "auto", 11)
    assert j11.source.name == "pixels.fp16.onnx" and j11.strongly_typed and not j11.fp16_flag
    with pytest.raises(UserError, match="not found; export it"):
        plan(["triplet"], onnx_dir, tmp_path, "fp16", "auto", 10)
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
    assert (tmp_path / "timing.cache").is_file()
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
