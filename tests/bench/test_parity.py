import importlib.util
import json
import subprocess
import sys

import pytest

import bench.parity
from bench.parity import compare, main
from export.__main__ import main as export_main
from export.graph import export_onnx
from imsim.artifacts import sha256_file, sidecar_path
from imsim.backends.onnxruntime_backend import OnnxRuntimeBackend
from imsim.backends.torch_backend import TorchBackend
from imsim.data import load_dataset
from imsim.errors import UserError
from imsim.methods import create_method
from imsim.parity import tolerances_for
from imsim.results import write_json_atomic
from tests import nets

EPISODES = {"episodes": 100, "ways": 10, "shots": 5, "queries": 15, "seed": 0}


@pytest.fixture
def registered(monkeypatch):
    nets.register(monkeypatch)


@pytest.fixture(scope="module")
def shapes():
    ds = load_dataset("shapes")
    return ds, ds.test.subset(ds.split.unseen)


def _compare(method, backend, shapes, precision):
    ds, pool = shapes
    ref = TorchBackend(method.as_module(), "fp32", channels_last=False)
    return compare(
        method,
        backend,
        ref,
        pool,
        ds.split.unseen,
        ds.class_names,
        tolerances_for(precision),
        EPISODES,
    )


def test_fp16_onnx_of_a_vit_passes_and_a_perturbed_one_fails(shapes, registered, tmp_path):
    method = create_method("test-vit")
    assert export_main(["--method", "test-vit", "--out", str(tmp_path), "--check-images", "8"]) == 0
    rows, passed = _compare(
        method, OnnxRuntimeBackend(tmp_path / "test-vit.fp16.onnx", "fp16"), shapes, "fp16"
    )
    checks = {r["metric"]: r for r in rows if "passed" in r}
    assert passed, [r for r in rows if r.get("passed") is False]
    assert checks["cosine_min"]["tolerance"] == 0.999 and checks["cosine_min"]["value"] < 1.0
    assert {"cosine_mean", "top1_agreement", "top5_overlap", "top1_delta_points"} <= set(checks)

    # The same graph exported from perturbed weights (1% noise) must FAIL.
    broken = nets.NetEmbedder("test-vit", nets.perturb(method.as_module(), 0.01))
    f = tmp_path / "broken.onnx"
    export_onnx(broken.as_module(), f, (32, 32))
    write_json_atomic(
        sidecar_path(f),
        {
            "schema": "imsim.onnx/1",
            "method": "test-vit",
            "precision": "fp32",
            "onnx_sha256": sha256_file(f),
            "input_size": [32, 32],
        },
    )
    rows, passed = _compare(method, OnnxRuntimeBackend(f, "fp32"), shapes, "fp32")
    assert not passed
    failed = {r["metric"] for r in rows if r.get("passed") is False}
    assert "cosine_min" in failed and "cosine_mean" in failed


def test_perturbed_torch_model_fails_task_level_checks(shapes, registered):
    method = create_method("test-convnet")
    perturbed = TorchBackend(nets.perturb(method.as_module(), 0.05), "fp32")
    rows, passed = _compare(method, perturbed, shapes, "bf16")
    assert not passed
    by = {r["metric"]: r for r in rows}
    assert by["cosine_mean"]["passed"] is False and by["top1_agreement"]["value"] < 0.99
    assert by["top1_agreement"]["passed"] is False


def test_cli_pass_writes_json_and_exits_0(tmp_path, registered):
    onnx_dir, out = tmp_path / "onnx", tmp_path / "parity.json"
    assert export_main(["--method", "pixels", "--out", str(onnx_dir), "--check-images", "8"]) == 0
    args = [
        "--method",
        "pixels",
        "--backend",
        "onnxruntime",
        "--precision",
        "fp16",
        "--onnx-dir",
        str(onnx_dir),
        "--episodes",
        "100",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["kind"] == "parity" and doc["passed"] is True
    assert doc["backend"]["graph_optimization"] == "extended"
    assert doc["tolerances"]["cos_min"] == 0.999
    checks = [r for r in doc["results"] if "passed" in r]
    assert len(checks) == 8 and all(r["passed"] for r in checks)
    assert {r["protocol"] for r in checks} == {"parity", "seed", "episodes"}
    gated = {r["metric"] for r in checks if r["gate"]}
    assert gated == {"cosine_min", "cosine_mean", "top1_agreement_tie_aware", "top1_delta_points"}
    ep = next(r for r in checks if r["protocol"] == "episodes")
    assert ep["paired_episodes"] == 100 and abs(ep["value"]) + ep["ci95"] <= 0.5
    reported = {r["metric"] for r in doc["results"] if "passed" not in r}
    assert {"recall_ref_top1", "recall_ref_top10", "map@r_delta_points"} <= reported


def test_cli_fail_exits_1(tmp_path, registered, monkeypatch):
    def perturbed_backend(name, method, options):
        return TorchBackend(nets.perturb(method.as_module(), 0.05), "fp32")

    monkeypatch.setattr(bench.parity, "create_backend", perturbed_backend)
    out = tmp_path / "parity.json"
    args = ["--method", "test-convnet", "--backend", "torch", "--episodes", "50", "--out", str(out)]
    assert main(args) == 1
    doc = json.loads(out.read_text())
    assert doc["passed"] is False
    assert any(r.get("passed") is False for r in doc["results"])


def test_cli_refusals_are_one_line(tmp_path):
    out = ["--out", str(tmp_path / "x.json")]
    cmd = [sys.executable, "-m", "bench.parity", "--method", "pixels", "--backend", "onnxruntime"]
    p = subprocess.run([*cmd, "--onnx-dir", str(tmp_path), *out], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().startswith(f"error: ONNX file {tmp_path}/pixels.onnx not found")
    with pytest.raises(UserError, match="method 'color-hist' is not a single network"):
        main(["--method", "color-hist", "--backend", "torch", *out])
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(UserError, match="TensorRT is not installed"):
            main(["--method", "pixels", "--backend", "trt", "--precision", "fp16", *out])
    assert not (tmp_path / "x.json").exists()


def test_cli_judges_int8_with_int8_tolerances(tmp_path, monkeypatch):
    from tests.export import tiny

    tiny.register(monkeypatch)
    monkeypatch.setattr(bench.parity, "load_data_from_args", lambda args: tiny.dataset())
    onnx_dir = tmp_path / "onnx"
    argv = ["--method", "test-convnet", "--out", str(onnx_dir), "--check-images", "4"]
    assert export_main([*argv, "--precision", "int8", "--calibration-images", "32"]) == 0
    for backend in ("onnxruntime", "openvino"):
        if backend == "openvino" and importlib.util.find_spec("openvino") is None:
            continue
        out = tmp_path / f"{backend}.json"
        args = ["--method", "test-convnet", "--backend", backend, "--precision", "int8"]
        args += ["--onnx-dir", str(onnx_dir), "--episodes", "50", "--out", str(out)]
        rc = main(args)
        doc = json.loads(out.read_text())
        # OpenVINO may fail on a CPU without VNNI (8-bit weights saturate there, export.int8).
        assert rc == (0 if doc["passed"] else 1) and (doc["passed"] or backend == "openvino")
        assert doc["backend"]["precision"] == "int8"
        assert doc["backend"]["onnx"].endswith("test-convnet.int8.onnx")
        assert doc["tolerances"]["cos_min"] == 0.99 and doc["tolerances"]["cos_mean"] == 0.999
        by = {r["metric"]: r for r in doc["results"]}
        # int8's tie margin: 8 bits, as bf16 (imsim.parity.UNIT_ROUNDOFF)
        u = 2.0**-8
        assert by["top1_agreement_tie_aware"]["tie_margin"] == pytest.approx(2 * (2 * u + u * u))
        assert 0.95 <= by["cosine_min"]["value"] < 1.0
        assert doc["dataset"]["n_images"] == 2 * 30  # the unseen classes' test images
