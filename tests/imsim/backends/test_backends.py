import json

import numpy as np
import pytest
import torch

from export.__main__ import main as export_main
from imsim.backends import (
    BackendOptions,
    create_backend,
    list_backends,
)
from imsim.backends.onnxruntime_backend import OnnxRuntimeBackend, default_opt_level
from imsim.backends.torch_backend import TorchBackend
from imsim.errors import UserError
from imsim.hardware import capabilities, forced
from imsim.methods import create_method
from imsim.parity import tensor_metrics
from tests import nets
from tests.machines import ZEN5


@pytest.fixture
def registered(monkeypatch):
    nets.register(monkeypatch)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """test-convnet exported once (fp32 + fp16) for the ONNX Runtime tests."""
    mp = pytest.MonkeyPatch()
    nets.register(mp)
    out = tmp_path_factory.mktemp("onnx")
    assert export_main(["--method", "test-convnet", "--out", str(out), "--check-images", "8"]) == 0
    mp.undo()
    return out


def test_registry_names_and_unknown_backend(registered):
    assert list_backends() == ["torch", "onnxruntime", "trt", "openvino"]
    with pytest.raises(UserError, match="unknown backend 'nope'"):
        create_backend("nope", create_method("pixels"), BackendOptions())


def test_torch_fp32_is_the_module_and_low_precision_is_close(registered):
    method = create_method("test-convnet")
    x = nets.images(16)
    ref = method.embed(x)
    fp32 = TorchBackend(method.as_module(), "fp32", channels_last=True)
    np.testing.assert_allclose(fp32.embed(x), ref, atol=2e-6)
    with forced(ZEN5):  # the label says native here, emulated on an AVX2-only CPU
        bf16 = create_backend("torch", method, BackendOptions(precision="bf16"))
        described = bf16.describe()
    out = bf16.embed(x)
    t = tensor_metrics(ref, out)
    # bf16 really ran (not bit-identical) and stayed close; output renormalized in fp32.
    assert 0 < t["abs_max"] < 0.05 and t["cosine_min"] > 0.99
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert described == {
        "backend": "torch",
        "precision": "bf16",
        "device": "cpu",
        "precision_label": "bf16",
        "precision_native": True,
        "channels_last": True,
        "compile": False,
    }
    # The backend works on its own copy: the method's module keeps its layout and device.
    assert method.as_module().body[0].weight.is_contiguous()


def test_torch_refuses_bad_precision_and_missing_cuda(registered):
    module = create_method("test-convnet").as_module()
    with pytest.raises(UserError, match="runs fp32, fp16 or bf16, not 'int8'"):
        TorchBackend(module, "int8")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            TorchBackend(module, "fp16", device="cuda")


def test_use_backend_keeps_the_method_and_swaps_the_runner(registered):
    method = create_method("test-convnet")
    x = nets.images(4)
    own = method.embed(x)
    # The default runner is the parity reference: torch fp32, eager, NCHW.
    assert method.runner.describe()["precision"] == "fp32" and not method.runner.channels_last
    spec, module = method.spec, method.as_module()
    method.use_backend(TorchBackend(module, "fp32"))
    assert method.spec is spec and method.as_module() is module
    assert method.runner.describe()["backend"] == "torch" and method.runner.channels_last
    np.testing.assert_allclose(method.embed(x), own, atol=2e-6)
    with pytest.raises(UserError, match="uint8"):
        method.embed(x.astype(np.float32))
    with pytest.raises(UserError, match="not a single network"):
        create_method("color-hist").use_backend(method.runner)


def test_methods_without_a_network_are_refused(registered):
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(UserError, match="not a single network"):
            create_backend(backend, create_method("color-hist"), BackendOptions())


def test_onnxruntime_matches_and_checks_input_size(exported, registered):
    method = create_method("test-convnet")
    opts = BackendOptions(onnx_dir=str(exported))
    b = create_backend("onnxruntime", method, opts)
    x = nets.images(5)
    np.testing.assert_allclose(b.embed(x), method.embed(x), atol=1e-5)
    assert b.describe()["provider"] == "CPUExecutionProvider"
    with pytest.raises(UserError, match="built for 32x32 images, got 40x40"):
        b.embed(nets.images(2, size=40))
    with pytest.raises(UserError, match="runs fp32, fp16 or int8, not 'bf16'"):
        create_backend("onnxruntime", method, BackendOptions(precision="bf16", onnx_dir="x"))


def test_fp16_on_cpu_defaults_to_extended_optimization():
    assert default_opt_level("fp16", "cpu") == "extended"
    assert default_opt_level("fp32", "cpu") == "all"
    assert default_opt_level("fp16", "cuda") == "all"


def test_onnxruntime_refuses_stale_or_foreign_files(exported, registered, tmp_path):
    method = create_method("test-convnet")
    # Not exported at all.
    with pytest.raises(UserError, match=r"not found; export it: python -m export"):
        create_backend("onnxruntime", method, BackendOptions(onnx_dir=str(tmp_path)))
    # Exported from other weights (a different checkpoint).
    ckpt = nets.save_checkpoint(nets.perturb(method.as_module(), 0.1), tmp_path / "w.safetensors")
    other = create_method(f"test-convnet:{ckpt}")
    with pytest.raises(UserError, match="exported from other weights"):
        create_backend("onnxruntime", other, BackendOptions(onnx_dir=str(exported)))
    # Changed after export.
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in exported.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    with open(copy / "test-convnet.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="changed since it was exported"):
        create_backend("onnxruntime", method, BackendOptions(onnx_dir=str(copy)))
    # Sidecar of another precision or broken.
    side = json.loads((copy / "test-convnet.fp16.onnx.json").read_text())
    side["precision"] = "fp32"
    (copy / "test-convnet.fp16.onnx.json").write_text(json.dumps(side))
    with pytest.raises(UserError, match="holds a fp32 graph, not fp16"):
        OnnxRuntimeBackend(copy / "test-convnet.fp16.onnx", "fp16")
    (copy / "test-convnet.fp16.onnx.json").write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        OnnxRuntimeBackend(copy / "test-convnet.fp16.onnx", "fp16")


def test_onnxruntime_gpu_providers_missing_is_one_line(exported):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(UserError, match=r"no CUDAExecutionProvider here.*onnxruntime-gpu"):
        OnnxRuntimeBackend(exported / "test-convnet.onnx", provider="cuda")
    with pytest.raises(UserError, match="no TensorrtExecutionProvider"):
        OnnxRuntimeBackend(exported / "test-convnet.onnx", provider="tensorrt")


@pytest.mark.slow
def test_torch_compile_matches_eager(registered):
    method = create_method("test-convnet")
    x = nets.images(6)
    compiled = TorchBackend(method.as_module(), "fp32", compile=True)
    np.testing.assert_allclose(compiled.embed(x), method.embed(x), atol=1e-5)
    assert compiled.describe()["compile"] is True


def test_low_precision_casts_matmul_weights_once_and_keeps_autocast_results(registered):
    import torch.nn.functional as F

    from imsim.backends.torch_backend import cast_matmul_weights

    method = create_method("test-convnet")
    x = nets.images(6)
    b = TorchBackend(method.as_module(), "bf16", channels_last=False)
    conv, bn = b.module.body[0], b.module.body[1]
    assert conv.weight.dtype == torch.bfloat16 and b.module.head.bias.dtype == torch.bfloat16
    assert bn.weight.dtype == torch.float32 and b.module.pre.mean.dtype == torch.float32
    assert method.as_module().body[0].weight.dtype == torch.float32  # the method's own is intact
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.normalize(method.as_module()(torch.from_numpy(x)).float(), dim=1).numpy()
    np.testing.assert_array_equal(b.embed(x), ref)  # same rounding: bit-identical

    vit = nets.make_module("test-vit")
    n = cast_matmul_weights(vit, torch.bfloat16)
    assert vit.attn.in_proj_weight.dtype == torch.bfloat16 and vit.ln1.weight.dtype == torch.float32
    assert (
        vit.cls.dtype == torch.float32 and n == 2 + 2 + 2 + 2 + 2 + 1
    )  # patch, qkv, out, mlp, proj
    out = TorchBackend(nets.make_module("test-vit"), "bf16").embed(x)
    assert tensor_metrics(create_method("test-vit").embed(x), out)["cosine_min"] > 0.999


def test_openvino_runs_the_fp32_export_in_fp32_and_bf16(exported, registered):
    pytest.importorskip("openvino")
    method = create_method("test-convnet")
    x = nets.images(5)
    ref = method.embed(x)
    fp32 = create_backend("openvino", method, BackendOptions(onnx_dir=str(exported)))
    np.testing.assert_allclose(fp32.embed(x), ref, atol=1e-5)
    assert fp32.describe()["inference_precision"] == "<Type: 'float32'>"
    opts = BackendOptions(precision="bf16", onnx_dir=str(exported), threads=1)
    bf16 = create_backend("openvino", method, opts)
    out = bf16.embed(x)
    t = tensor_metrics(ref, out)
    assert 0 < t["abs_max"] < 0.05 and t["cosine_min"] > 0.99  # bf16 really ran, and close
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert bf16.describe()["threads"] == 1
    # The label says what OpenVINO chose: bf16 where the CPU has it, else it ran fp32.
    ran_bf16 = bf16.inference_type == "bf16"
    assert bf16.precision_tags() == {
        "precision_label": capabilities("cpu").label("bf16") if ran_bf16 else "bf16 (ran as fp32)",
        "precision_native": ran_bf16 and capabilities("cpu").native_bf16,
    }
    assert fp32.precision_tags() == {"precision_label": "fp32", "precision_native": True}
    # Outputs are copies: a later call does not overwrite an earlier result.
    y = bf16.run_prepared(bf16.prepare(x))
    bf16.run_prepared(bf16.prepare(nets.images(5, seed=1)))
    np.testing.assert_array_equal(y, out)
    with pytest.raises(UserError, match="not the FP32 export"):
        from imsim.backends.openvino_backend import OpenVinoBackend

        OpenVinoBackend(exported / "test-convnet.fp16.onnx", "bf16")
    with pytest.raises(UserError, match="runs fp32, bf16 or int8, not 'fp16'"):
        create_backend("openvino", method, BackendOptions(precision="fp16", onnx_dir="x"))


@pytest.fixture(scope="module")
def exported_int8(tmp_path_factory):
    """test-convnet exported in fp32 and int8 (QDQ), calibrated on the tiny dataset."""
    from tests.export import tiny

    mp = pytest.MonkeyPatch()
    tiny.register(mp)
    out = tmp_path_factory.mktemp("onnx8")
    argv = ["--method", "test-convnet", "--out", str(out), "--check-images", "8"]
    assert export_main([*argv, "--precision", "int8", "--calibration-images", "64"]) == 0
    mp.undo()
    return out


def test_onnxruntime_runs_the_int8_graph(exported_int8, registered):
    from tests.machines import ZEN3

    method = create_method("test-convnet")
    x = nets.images(6, seed=3)
    opts = BackendOptions(precision="int8", onnx_dir=str(exported_int8))
    with forced(ZEN3):  # AVX2's 8-bit multiply-add: native, no warning
        b = create_backend("onnxruntime", method, opts)
        assert b.precision_tags() == {"precision_label": "int8", "precision_native": True}
    d = b.describe()
    assert d["onnx"].endswith("test-convnet.int8.onnx") and d["graph_optimization"] == "all"
    t = tensor_metrics(method.embed(x), b.embed(x))
    assert 0.99 <= t["cosine_min"] < 1.0 and t["abs_max"] > 1e-5  # INT8 ran, and is close
    old = capabilities("cpu").__class__(kind="cpu", name="pre-AVX2 x86", isa="DEFAULT")
    with forced(old):
        assert b.precision_tags()["precision_label"] == "int8 (emulated)"
    with pytest.raises(UserError, match="holds a fp32 graph, not int8"):
        OnnxRuntimeBackend(exported_int8 / "test-convnet.onnx", "int8")


def test_openvino_runs_the_int8_graph_and_says_what_ran(exported_int8, registered, capsys):
    pytest.importorskip("openvino")
    from imsim.backends.openvino_backend import OpenVinoBackend, warn_saturation
    from tests.machines import ZEN3

    method = create_method("test-convnet")
    x = nets.images(6, seed=3)
    opts = BackendOptions(precision="int8", onnx_dir=str(exported_int8), threads=1)
    with forced(ZEN3):  # 8-bit weights on a CPU without VNNI: one warning, with the fix
        b = create_backend("openvino", method, opts)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no VNNI" in line and "--weight-bits 7" in line
    with forced(ZEN5):  # VNNI: no saturation, no warning
        assert not warn_saturation(b.path, 8)
    with forced(ZEN3):  # 7-bit weights: nothing to warn about
        assert not warn_saturation(b.path, 7)
    assert capsys.readouterr().err == ""
    assert b.describe()["int8_weight_bits"] == 8
    # OpenVINO reports each matrix layer's runtime precision: the convolutions run in 8 bits.
    assert b.matrix_layers.get("int8", 0) >= 3 and sum(b.matrix_layers.values()) == 4
    assert b.describe()["matrix_layers"] == b.matrix_layers
    assert b.precision_tags()["precision_label"] == capabilities("cpu").label("int8")
    t = tensor_metrics(method.embed(x), b.embed(x))
    assert 0.95 <= t["cosine_min"] < 1.0  # 8 bits ran (0.96 on an AVX2-only CPU: saturation)
    fp32 = OpenVinoBackend(exported_int8 / "test-convnet.onnx", "fp32")
    assert fp32.matrix_layers == {"fp32": 4}
    # A run where no matrix layer ran in 8 bits says so.
    fp32.precision = "int8"
    tags = fp32.precision_tags()
    assert tags == {"precision_label": "int8 (ran as fp32)", "precision_native": False}
    with pytest.raises(UserError, match=r"not the INT8 export OpenVINO compiles; use M\.int8"):
        OpenVinoBackend(exported_int8 / "test-convnet.onnx", "int8")
    with pytest.raises(UserError, match="not the FP32 export"):
        OpenVinoBackend(exported_int8 / "test-convnet.int8.onnx", "fp32")
