import json

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main
from export.fp16 import normalization_tail
from imsim.artifacts import module_sha256, onnx_path, sha256_file
from imsim.backends.onnxruntime_backend import OnnxRuntimeBackend
from imsim.errors import UserError
from imsim.methods import create_method, list_methods, registry
from imsim.parity import FP32_TOLERANCES, LOW_PRECISION_TOLERANCES, tensor_metrics
from tests import nets


@pytest.fixture
def registered(monkeypatch):
    nets.register(monkeypatch)


def _export(method, out, *extra):
    assert main(["--method", method, "--out", str(out), "--check-images", "16", *extra]) == 0


def _float_type_of(model: onnx.ModelProto) -> dict[str, int]:
    """elem_type of every typed value in a (shape-inferred) graph."""
    inferred = onnx.shape_inference.infer_shapes(model)
    vals = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: v.type.tensor_type.elem_type for v in vals}


@pytest.mark.parametrize("method", ["pixels", "test-convnet", "test-vit"])
def test_export_round_trips_through_onnxruntime(method, tmp_path, registered):
    _export(method, tmp_path)
    m = create_method(method)
    x = nets.images(13, seed=5)  # a batch size the export never saw
    ref = m.embed(x)
    for precision, tol in (("fp32", FP32_TOLERANCES), ("fp16", LOW_PRECISION_TOLERANCES)):
        path = tmp_path / (f"{method}.onnx" if precision == "fp32" else f"{method}.fp16.onnx")
        out = OnnxRuntimeBackend(path, precision).embed(x)
        t = tensor_metrics(ref, out)
        assert t["cosine_min"] >= tol.cos_min and t["cosine_mean"] >= tol.cos_mean, (precision, t)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
        side = json.loads(path.with_name(path.name + ".json").read_text())
        assert side["method"] == method and side["precision"] == precision
        assert side["input_size"] == [32, 32] and side["embedding_size"] == m.spec.embedding_dim
        assert side["opset"] >= 17 and side["onnx_sha256"] == sha256_file(path)
        assert side["weights_sha256"] == module_sha256(m.as_module())
        assert set(side["check"]) == {"random", "real"}
        if precision == "fp32":
            assert t["abs_max"] < 1e-4
        else:
            assert "LayerNormalization" in side["fp16"]["fp32_op_types"]
            # The preprocessing module (``pre``) and the input cast stay FP32.
            assert side["fp16"]["fp32_preprocessing"]["scopes"] == (
                ["/module/pre/"] if method != "pixels" else []
            )
            assert "/Cast" in side["fp16"]["fp32_preprocessing"]["nodes"]


def test_fp16_graph_keeps_sensitive_ops_and_io_in_fp32(tmp_path, registered):
    _export("test-vit", tmp_path)
    model = onnx.load(str(tmp_path / "test-vit.fp16.onnx"))
    onnx.checker.check_model(model, full_check=True)
    types = _float_type_of(model)
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == f32
    ops = {n.op_type for n in model.graph.node}
    assert {"LayerNormalization", "Softmax", "MatMul"} <= ops
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "ReduceL2"):
            assert types[node.output[0]] == f32, node.op_type
        if node.op_type == "Erf":  # the GELU runs in FP16, like PyTorch autocast (export.fp16)
            assert types[node.output[0]] == f16, node.op_type
    # The network itself did go to FP16: its matrix products run in half precision.
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    assert matmuls and all(types[n.output[0]] == f16 for n in matmuls)
    # Every node of the final normalization stays FP32.
    tail = set(normalization_tail(onnx.load(str(tmp_path / "test-vit.onnx"))))
    assert {"ReduceL2", "Div"} <= {
        n.op_type for n in onnx.load(str(tmp_path / "test-vit.onnx")).graph.node if n.name in tail
    }
    for node in model.graph.node:
        if node.name in tail and node.op_type != "Constant":
            assert types[node.output[0]] == f32, node.name


def test_fp16_cpu_session_uses_extended_optimization(tmp_path, registered):
    _export("test-vit", tmp_path)
    b16 = OnnxRuntimeBackend(tmp_path / "test-vit.fp16.onnx", "fp16")
    b32 = OnnxRuntimeBackend(tmp_path / "test-vit.onnx", "fp32")
    assert b16.opt_level == "extended" and b32.opt_level == "all"
    assert b16.describe()["graph_optimization"] == "extended"
    assert b16.embed(nets.images(3)).shape == (3, 48)


def test_checkpoint_flag_flows_into_the_method(tmp_path, registered):
    trained = nets.perturb(nets.make_module("test-convnet"), 0.5, seed=3)
    ckpt = nets.save_checkpoint(trained, tmp_path / "convnet.safetensors")
    _export("test-convnet", tmp_path / "onnx", "--checkpoint", str(ckpt))
    side = json.loads((tmp_path / "onnx" / "test-convnet.onnx.json").read_text())
    assert side["method_item"] == f"test-convnet:{ckpt}"
    assert side["weight_files"]["checkpoint"]["sha256"] == sha256_file(ckpt)
    assert side["weights_sha256"] == module_sha256(trained)
    assert side["weights_sha256"] != module_sha256(nets.make_module("test-convnet"))
    x = nets.images(4)
    with torch.inference_mode():
        ref = trained(torch.from_numpy(x)).numpy()
    out = OnnxRuntimeBackend(tmp_path / "onnx" / "test-convnet.onnx").embed(x)
    np.testing.assert_allclose(out, ref, atol=1e-5)


class NotNormalized(torch.nn.Module):
    """Breaks the module contract (no L2 normalization), which the export check must catch."""

    def forward(self, images):
        return images.float().mean(dim=(1, 2)) * 3.0


def test_a_graph_that_fails_its_check_is_not_kept(tmp_path, monkeypatch):
    def factory(*_, **__):
        return nets.NetEmbedder("test-unnormalized", NotNormalized())

    entry = registry.Entry("test-unnormalized", factory, in_all=False, help="")
    registry.list_methods()
    monkeypatch.setitem(registry._REGISTRY, "test-unnormalized", entry)
    with pytest.raises(
        UserError, match=r"test-unnormalized.onnx \(fp32\) does not match PyTorch.*norm off"
    ):
        _export("test-unnormalized", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind


def test_methods_without_a_network_and_bad_flags_are_refused(tmp_path, registered):
    with pytest.raises(UserError, match="not a single network"):
        main(["--method", "color-hist", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="opset"):
        main(["--method", "pixels", "--out", str(tmp_path), "--opset", "13"])
    with pytest.raises(UserError, match="not found"):
        main(["--method", "test-convnet", "--checkpoint", str(tmp_path / "nope.safetensors")])
    with pytest.raises(UserError, match="once"):
        main(["--method", "test-convnet:a", "--checkpoint", "b", "--out", str(tmp_path)])
    assert not any(tmp_path.glob("*.onnx"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(list_methods()))
def test_every_registered_network_exports(name, tmp_path):
    """Every method that builds without a checkpoint (random weights for CLIP) round-trips."""
    try:
        method = create_method(name, pretrained="none", device="cpu")
    except UserError as e:
        pytest.skip(f"{name} cannot be built here: {e}")
    if method.as_module() is None:
        pytest.skip(f"{name} is not a single network")
    _export(name, tmp_path, "--pretrained", "none")
    x = nets.images(5, seed=9)
    ref = method.embed(x)
    for p, tol in (("fp32", FP32_TOLERANCES), ("fp16", LOW_PRECISION_TOLERANCES)):
        f = onnx_path(tmp_path, method.spec.name, p)  # e.g. clip[random-weights].onnx
        t = tensor_metrics(ref, OnnxRuntimeBackend(f, p).embed(x))
        assert t["cosine_min"] >= tol.cos_min, (p, t)


def test_frozen_attention_exports(tmp_path):
    """A frozen module (no weight requires grad) takes nn.MultiheadAttention's fused inference
    path, which has no ONNX export; the export must still trace the regular path."""
    from export.graph import export_onnx

    module = nets.make_module("test-vit").requires_grad_(False)
    assert torch.backends.mha.get_fastpath_enabled()
    export_onnx(module, tmp_path / "vit.onnx", (32, 32))
    assert torch.backends.mha.get_fastpath_enabled()  # restored
