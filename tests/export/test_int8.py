"""INT8 export: QDQ placement TensorRT accepts, calibration on seen training images only, the
sidecar, and a graph that fails its check is not kept."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from export.__main__ import main
from export.int8 import MATRIX_OPS, calibration_set, qdq_report
from imsim.artifacts import sha256_file
from imsim.backends.onnxruntime_backend import OnnxRuntimeBackend
from imsim.errors import UserError
from imsim.parity import tensor_metrics, tolerances_for
from tests import nets
from tests.export import tiny

CALIBRATED: list[np.ndarray] = []  # what the quantizer was given, by the int8_dir export


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    """test-convnet exported in fp32 and int8 (64 calibration images) from the tiny dataset, with
    the images handed to the quantizer recorded in ``CALIBRATED``."""
    import export.int8

    mp = pytest.MonkeyPatch()
    tiny.register(mp)
    real = export.int8.ImageReader

    def spy(images, *a, **k):
        CALIBRATED.append(images.copy())
        return real(images, *a, **k)

    mp.setattr(export.int8, "ImageReader", spy)
    out = tmp_path_factory.mktemp("int8")
    argv = ["--method", "test-convnet", "--out", str(out), "--check-images", "8"]
    argv += ["--precision", "int8", "--calibration-images", "64", "--calibration-seed", "3"]
    assert main(argv) == 0
    mp.undo()
    return out


def test_calibration_draws_seen_training_images_only():
    ds = tiny.dataset()
    # Even handed the whole training split, only images of the classes asked for are drawn.
    cal = calibration_set(ds.train, tiny.SEEN, ds.class_names, 30, seed=5, dataset="tiny")
    assert set(tiny.seen_colour(cal.images)) <= set(tiny.SEEN)  # read from the pixels
    assert cal.info["classes"] == ["class0", "class1", "class2", "class3"]
    assert cal.info["per_class"] == {"class0": 8, "class1": 8, "class2": 7, "class3": 7}
    assert cal.info["count"] == 30 == len(cal.images) and cal.info["split"] == "train"
    again = calibration_set(ds.train, tiny.SEEN, ds.class_names, 30, seed=5, dataset="tiny")
    other = calibration_set(ds.train, tiny.SEEN, ds.class_names, 30, seed=6, dataset="tiny")
    assert np.array_equal(again.images, cal.images) and not np.array_equal(other.images, cal.images)
    with pytest.raises(UserError, match="has 40 training images, fewer than the 41"):
        calibration_set(ds.train, tiny.SEEN, ds.class_names, 164, seed=0, dataset="tiny")


def test_export_calibrates_on_seen_training_images_only(int8_dir):
    (images,) = CALIBRATED  # calibrated once
    ds = tiny.dataset()
    train = {x.tobytes(): int(y) for x, y in zip(ds.train.images, ds.train.labels, strict=True)}
    assert len(images) == 64
    assert {train[x.tobytes()] for x in images} == set(tiny.SEEN)  # training images, seen classes


def _consumers(model):
    out = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def test_int8_graph_is_qdq_around_matrix_ops_only(int8_dir):
    model = onnx.load(str(int8_dir / "test-convnet.int8.onnx"))
    onnx.checker.check_model(model, full_check=True)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = _consumers(model)
    matrix = [n for n in model.graph.node if n.op_type in MATRIX_OPS]
    assert len(matrix) == 4  # 3 Conv + the head's Gemm
    for node in matrix:  # activation and weight both arrive dequantized from INT8
        act, weight = (producer[i] for i in node.input[:2])
        assert act.op_type == weight.op_type == "DequantizeLinear", node.name
        w = inits[weight.input[0]]
        assert w.dtype == np.int8 and w.min() >= -127  # TensorRT's weight range
        assert np.abs(w).max() == 127  # the full 8-bit grid (7 bits: --weight-bits 7)
        # One scale per output channel: Conv's axis 0, Gemm's (transB=1) too, MatMul's last.
        axis = {a.name: a.i for a in weight.attribute}["axis"]
        assert axis == (0 if node.op_type in ("Conv", "Gemm") else w.ndim - 1)
        assert inits[weight.input[1]].shape == (w.shape[axis],) and w.shape[axis] > 1
        assert producer[act.input[0]].op_type == "QuantizeLinear"
        if len(node.input) > 2:  # the bias stays float
            assert node.input[2] in inits and inits[node.input[2]].dtype == np.float32
        # Outputs are not quantized: the accumulation result flows on in float.
        assert all(c.op_type != "QuantizeLinear" for c in consumers[node.output[0]])
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any()  # symmetric: zero points 0
        if node.op_type == "QuantizeLinear":  # each feeds DequantizeLinear -> matrix op only
            for dq in consumers[node.output[0]]:
                assert dq.op_type == "DequantizeLinear"
                assert {c.op_type for c in consumers[dq.output[0]]} <= set(MATRIX_OPS)
    # Preprocessing (input cast, /module/pre/) and the final normalization: float, untouched.
    original = onnx.load(str(int8_dir / "test-convnet.onnx"))
    kept = [n for n in original.graph.node if n.name.startswith(("/module/pre/", "/Cast"))]
    names = {n.name: n for n in model.graph.node}
    assert kept and all(names[n.name].op_type == n.op_type for n in kept)
    side = json.loads((int8_dir / "test-convnet.int8.onnx.json").read_text())
    tail = side["int8"]["float_nodes"]["normalization"]
    assert {"ReduceL2", "Div"} <= {names[n].op_type for n in tail}
    for n in tail:
        assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
                   for i in names[n].input)  # fmt: skip
    report = qdq_report(model)
    assert report["int8_matrix_ops"] == 4 and report["float_matrix_ops"] == []
    assert report["problems"] == []


def test_int8_sidecar_and_onnxruntime_run(int8_dir):
    path = int8_dir / "test-convnet.int8.onnx"
    side = json.loads(path.with_name(path.name + ".json").read_text())
    assert side["precision"] == "int8" and side["onnx_sha256"] == sha256_file(path)
    cal = side["int8"]["calibration"]
    assert cal["dataset"] == "tiny" and cal["split"] == "train" and cal["seed"] == 3
    assert cal["classes"] == ["class0", "class1", "class2", "class3"] and cal["count"] == 64
    assert cal["method"] == "minmax"
    q = side["int8"]["quantizer"]
    assert q["format"] == "QDQ" and q["op_types"] == ["Conv", "MatMul", "Gemm"]
    assert q["extra_options"]["ActivationSymmetric"] and not q["extra_options"]["QuantizeBias"]
    assert side["int8"]["fp32_fallback"] == [] and "gate" not in side
    assert set(side["check"]) == {"random", "real"}
    assert not (int8_dir / "test-convnet.fp16.onnx").exists()  # only what --precision asked
    x = nets.images(11, seed=4)
    out = OnnxRuntimeBackend(path, "int8").embed(x)
    t = tensor_metrics(nets.create("test-convnet").embed(x), out)
    tol = tolerances_for("int8")
    assert tol.cos_min <= t["cosine_min"] < 1.0 and t["cosine_mean"] >= tol.cos_mean
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_seven_bit_weights_for_cpus_without_vnni(tmp_path, monkeypatch):
    tiny.register(monkeypatch)
    argv = ["--method", "test-convnet", "--out", str(tmp_path), "--check-images", "4"]
    argv += ["--precision", "int8", "--calibration-images", "16", "--weight-bits", "7"]
    assert main(argv) == 0
    model = onnx.load(str(tmp_path / "test-convnet.int8.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = [
        inits[n.input[0]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits
    ]
    assert len(weights) == 4 and max(int(np.abs(w).max()) for w in weights) == 64
    side = json.loads((tmp_path / "test-convnet.int8.onnx.json").read_text())
    assert side["int8"]["quantizer"]["weight_bits"] == 7
    assert "[-64, 64]" in side["int8"]["quantizer"]["weights"]
    assert qdq_report(model)["problems"] == []  # still TensorRT's symmetric INT8


def test_qdq_report_flags_what_tensorrt_refuses(int8_dir):
    model = onnx.load(str(int8_dir / "test-convnet.int8.onnx"))
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear")
    zp = next(t for t in model.graph.initializer if t.name == dq.input[2])
    three = np.full(numpy_helper.to_array(zp).shape, 3, np.int8)
    zp.CopyFrom(numpy_helper.from_array(three, zp.name))
    (problem,) = [p for p in qdq_report(model)["problems"] if "zero point" in p]
    assert dq.name in problem


def test_an_int8_graph_that_fails_its_check_is_not_kept(tmp_path, monkeypatch):
    tiny.register(monkeypatch)
    argv = ["--method", "test-hostile", "--out", str(tmp_path), "--check-images", "8"]
    with pytest.raises(UserError, match=r"test-hostile.int8.onnx \(int8\) does not match PyTorch"):
        main([*argv, "--precision", "int8", "--calibration-images", "32"])
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["test-hostile.onnx", "test-hostile.onnx.json"]  # no int8, no temporary


def test_bad_precision_lists_are_one_line(tmp_path, monkeypatch):
    tiny.register(monkeypatch)
    argv = ["--method", "test-convnet", "--out", str(tmp_path)]
    with pytest.raises(UserError, match="list of fp32, fp16, int8, got 'fp32,int4'"):
        main([*argv, "--precision", "fp32,int4"])
    with pytest.raises(UserError, match="--gate judges fp16 and int8 graphs"):
        main([*argv, "--precision", "fp32", "--gate"])
    with pytest.raises(UserError, match="fewer than the 300 calibration images"):
        main([*argv, "--precision", "int8", "--calibration-images", "1200"])


def test_the_cifar_vit_exports_for_any_batch_and_quantizes_its_matrix_ops(tmp_path):
    """The trained methods' ViT (a small one): a graph traced at batch 2 runs at batch 5 (its
    class token is expanded to the traced batch, not a constant), and INT8 covers the patch
    embedding, every attention and MLP matrix op and the head."""
    import torch

    from export.fp16 import preprocessing_scopes
    from export.graph import export_onnx
    from export.int8 import quantizable_nodes, to_int8
    from imsim.models import EmbeddingModule, ViTCifar

    torch.manual_seed(0)
    module = EmbeddingModule(ViTCifar(width=32, depth=2, heads=2, patch=8, embedding_dim=16))
    module.eval()
    fp32 = tmp_path / "vit.onnx"
    export_onnx(module, fp32, (32, 32))
    x = nets.images(5, seed=1)
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).numpy()
    out32 = OnnxRuntimeBackend(fp32, sidecar=_side("fp32")).embed(x)
    assert tensor_metrics(ref, out32)["abs_max"] < 1e-5
    scopes = preprocessing_scopes(module)
    units = quantizable_nodes(onnx.load(str(fp32)), scopes)
    # The patch Conv, per layer the QKV projection, QK^T, AV, the output projection and the two
    # MLP layers, and the head.
    assert len(units) == 1 + 2 * 6 + 1
    info = to_int8(fp32, tmp_path / "vit.int8.onnx", nets.images(16, seed=2), scopes)
    assert info["graph"]["int8_matrix_ops"] == len(units) and not info["graph"]["float_matrix_ops"]
    out = OnnxRuntimeBackend(tmp_path / "vit.int8.onnx", "int8", sidecar=_side("int8")).embed(x)
    assert tensor_metrics(ref, out)["cosine_min"] > 0.9


def _side(precision: str) -> dict:
    return {"precision": precision, "input_size": [32, 32]}


def test_clip_resampling_matmuls_stay_float_in_int8(tmp_path):
    """CLIP's preprocessing resamples with MatMuls (PIL-exact rounding): excluded by scope, so
    INT8 quantizes only the network's Conv and Gemm."""
    import torch

    from export.fp16 import preprocessing_nodes, preprocessing_scopes
    from export.graph import export_onnx
    from export.int8 import quantizable_nodes, to_int8
    from tests.export.test_graph_clean import TinyClipLike

    module = TinyClipLike().eval()
    fp32 = tmp_path / "clip.onnx"
    model = export_onnx(module, fp32, (32, 32))
    scopes = preprocessing_scopes(module)
    pre = set(preprocessing_nodes(model, scopes))
    resample = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name in pre]
    assert len(resample) == 2
    units = quantizable_nodes(model, scopes)
    assert [n.split("/")[-1] for n in units] == ["Conv", "Gemm"]
    info = to_int8(fp32, tmp_path / "clip.int8.onnx", nets.images(8, seed=5), scopes)
    assert set(resample) <= set(info["float_nodes"]["preprocessing"])
    assert info["graph"]["int8_matrix_ops"] == 2 and info["graph"]["float_matrix_ops"] == resample
    x = nets.images(4, seed=6)
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).numpy()
    out = OnnxRuntimeBackend(tmp_path / "clip.int8.onnx", "int8", sidecar=_side("int8")).embed(x)
    assert tensor_metrics(ref, out)["cosine_min"] > 0.99
