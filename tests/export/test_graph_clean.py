"""The exported graphs are clean: no runtime construction of constants (CLIP's resampling
matrices), folded constant subgraphs (the ResNet's channel padding), FP32 preprocessing in the
FP16 graph, and node-name scopes that match what the exporter writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import export.graph
from export.fp16 import preprocessing_nodes, preprocessing_scopes, to_fp16
from export.graph import export_onnx
from imsim.clip.preprocess import ClipPreprocess
from imsim.models import EmbeddingModule, Preprocess
from imsim.models.resnet_cifar import BasicBlock
from tests import nets

F32, F16, F64 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE


class TinyClipLike(nn.Module):
    """CLIP's uint8-in preprocessing (resampling matrices built lazily) and a small head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.preprocess = ClipPreprocess({"size": 48, "mean": (0.5,) * 3, "std": (0.25,) * 3})
        self.conv = nn.Conv2d(3, 8, 8, 8)
        self.head = nn.Linear(8 * 36, 16)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.conv(self.preprocess(images)).flatten(1)), dim=-1)


def small_resnet() -> nn.Module:
    """A stem and one CIFAR ResNet block that halves the resolution and widens 16 -> 32 channels
    through the option-A shortcut (subsample, zero-pad the channels): the Pad to fold."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), BasicBlock(16, 32, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    return EmbeddingModule(net).eval()


def _types(model: onnx.ModelProto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _double_tensors(model: onnx.ModelProto) -> list[str]:
    found = [name for name, t in _types(model).items() if t == F64]
    for n in model.graph.node:
        for a in n.attribute:
            if (a.name == "to" and a.i == F64) or (a.name == "value" and a.t.data_type == F64):
                found.append(n.name)
    return found


def test_clip_preprocessing_exports_its_matrices_as_constants(tmp_path: Path, monkeypatch) -> None:
    module = TinyClipLike().eval()
    model = export_onnx(module, tmp_path / "clip.onnx", (32, 32))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"NonZero", "ScatterND"}, ops
    assert _double_tensors(model) == []
    # The two resampling products read their matrices from initializers.
    inits = {t.name for t in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == 2 and all(set(n.input) & inits for n in matmuls)

    # Traced cold (the bug), the matrices were rebuilt by the graph on every run (constant
    # folding, the second line of defence, would compute them ahead too; switched off here).
    cold = TinyClipLike().eval()
    monkeypatch.setattr(export.graph, "warm", lambda *_: None)
    monkeypatch.setattr(export.graph, "fold_constants", lambda m: m)
    bad = export_onnx(cold, tmp_path / "cold.onnx", (32, 32))
    assert {"NonZero", "ScatterND"} <= {n.op_type for n in bad.graph.node}
    assert _double_tensors(bad)


def test_fp16_graph_keeps_preprocessing_in_fp32(tmp_path: Path) -> None:
    module = TinyClipLike().eval()
    model = export_onnx(module, tmp_path / "clip.onnx", (32, 32))
    scopes = preprocessing_scopes(module)
    assert scopes == ["/module/preprocess/"]
    pre = preprocessing_nodes(model, scopes)
    pre_ops = {n.op_type for n in model.graph.node if n.name in pre}
    assert {"MatMul", "Floor", "Clip", "Sub", "Div", "Cast"} <= pre_ops

    m16, info = to_fp16(model, scopes)
    assert info["fp32_preprocessing"] == {"scopes": scopes, "nodes": pre}
    types = _types(m16)
    for n in m16.graph.node:
        if n.name in pre:
            assert types[n.output[0]] == F32, (n.name, n.op_type)
    conv = next(n for n in m16.graph.node if n.op_type == "Conv")
    assert types[conv.output[0]] == F16  # the network itself is FP16

    # Without the scopes the resampling would run in FP16 (what the fix changes).
    plain, _ = to_fp16(model)
    plain_types = _types(plain)
    resample = [n for n in plain.graph.node if n.name in pre and n.op_type == "Floor"]
    assert resample and all(plain_types[n.output[0]] == F16 for n in resample)

    # The kept preprocessing reproduces PyTorch's to the last level: the FP16 graph's output
    # differs from PyTorch's by the FP16 network only, not by moved pixels.
    from imsim.backends.onnxruntime_backend import create_session

    path = tmp_path / "clip.fp16.onnx"
    onnx.save(m16, str(path))
    x = nets.images(6, seed=4)
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).numpy()
    out = create_session(path, precision="fp16").run(None, {"images": x})[0]
    assert float(np.min(np.sum(ref * out, axis=1))) > 0.9999


class Nested(nn.Module):
    """Preprocessing nested in a Sequential and in a ModuleList (which has no scope of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(Preprocess(32), nn.Conv2d(3, 4, 3))
        self.blocks = nn.ModuleList([Preprocess(32, mean=(0.1, 0.2, 0.3))])
        self.head = nn.Linear(4 + 3, 8)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        a = self.stem(images).mean(dim=(2, 3))
        b = self.blocks[0](images).mean(dim=(2, 3))
        return F.normalize(self.head(torch.cat([a, b], dim=1)), dim=1)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (Nested, ["/module/stem/stem.0/", "/module/blocks.0/"]),
        (lambda: nets.make_module("test-vit"), ["/module/pre/"]),
        (small_resnet, ["/module/preprocess/"]),
    ],
)
def test_preprocessing_scopes_match_the_exported_node_names(tmp_path: Path, make, expected):
    module = make().eval()
    assert preprocessing_scopes(module) == expected
    model = export_onnx(module, tmp_path / "m.onnx", (32, 32))
    names = [n.name for n in model.graph.node]
    for scope in expected:
        assert any(name.startswith(scope) for name in names), (scope, names[:8])


def test_constant_subgraphs_are_folded(tmp_path: Path, monkeypatch) -> None:
    module = small_resnet()
    model = export_onnx(module, tmp_path / "resnet.onnx", (32, 32))
    inits = {t.name for t in model.graph.initializer}
    pads = [n for n in model.graph.node if n.op_type == "Pad"]
    assert len(pads) == 1
    assert all(n.input[1] in inits for n in pads)  # pads are a constant, not computed
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"ConstantOfShape", "Constant", "Identity", "Concat", "Reshape"}, ops
    stored = onnx.load(str(tmp_path / "resnet.onnx"))  # the file holds the folded graph
    assert len(stored.graph.node) == len(model.graph.node)

    monkeypatch.setattr(export.graph, "fold_constants", lambda m: m)
    raw = export_onnx(module, tmp_path / "raw.onnx", (32, 32))
    assert "ConstantOfShape" in {n.op_type for n in raw.graph.node}
    assert len(raw.graph.node) > len(model.graph.node)
