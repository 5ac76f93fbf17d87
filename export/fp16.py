"""The FP16 variant of an exported graph: FP16 weights and math, sensitive ops kept in FP32.

Uses ``onnxruntime.transformers.float16.convert_float_to_float16`` (onnxconverter-common's copy
of it fails on ViT graphs) with FP32 inputs/outputs and a block list: normalization layers,
softmax, reductions, powers/roots/divisions/exponentials, every node of the final L2
normalization (found by walking back from the graph output), and the whole preprocessing (the
nodes of the module's ``*Preprocess`` submodules, and the uint8 -> float cast of the input). The
preprocessing stays FP32 as in the PyTorch backends: CLIP's resampling reproduces PIL's uint8
rounding (MatMul, Floor, Clip), which FP16 (11-bit significand) breaks: 6.3% of the pixels of
200 shapes images resized 32 -> 224 moved by 1 or 2 levels. The same graph is what TensorRT
builds strongly typed (11, and 10.12+ by default), and ONNX Runtime on the CPU runs it, so FP16
numerics are testable without a GPU.

The block list's trade-off. A strongly typed TensorRT engine keeps every type the graph states,
so each op kept FP32 inside an FP16 block costs a Cast pair (an "island"). Kept FP32:
LayerNorm and the other normalizations, Softmax, reductions, powers/roots/reciprocals,
exponentials/logarithms (ranges or sums that overflow or lose digits in FP16), the final L2
normalization and the preprocessing. Released to FP16: Erf and Div, so a GELU (x * 0.5 *
(1 + erf(x / sqrt 2))) is one FP16 pointwise chain, as PyTorch autocast runs it; the divisions
that matter (preprocessing, normalization tail) stay FP32 by node. Softmax stays FP32 as autocast
keeps it; TensorRT's attention fusion looks for MatMul, Softmax, MatMul ("Fused Attention",
TensorRT documentation), and whether it fuses across the Softmax casts could not be checked here
(no TensorRT): ``make gpu-check`` measures the engine, and dropping "Softmax" from ``FP32_OPS``
is the change to make if it does not. Measured on ONNX Runtime CPU against PyTorch fp32
(ViT-B-32 image tower with random weights, 32 shapes + 16 noise images): 1 - cosine was 1.3-1.5e-7
on average and at most 1.8e-7 (max abs difference 0.9-1.2e-4) whether Erf/Div, Softmax, or all
three were FP32 or FP16, and the same held on the tiny test CLIP, while the ViT-B-32 graph's Cast
count fell from 215 (all three FP32) to 191 (Erf and Div FP16; 167 with Softmax too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import onnx
import torch

# Op types that stay FP32 anywhere in the graph: their range or accumulation does not fit FP16.
FP32_OPS = (
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "LpNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceLogSumExp",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
)
# Ops an L2 normalization is exported as (x / max(||x||, eps), expanded to x's shape).
_NORMALIZATION_OPS = {
    "Div",
    "Clip",
    "Max",
    "Expand",
    "ReduceL2",
    "ReduceSum",
    "Sqrt",
    "Pow",
    "Identity",
    "Constant",
    "LpNormalization",
}


def normalization_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that compute the final L2 normalization of the outputs.

    Walks back from each graph output through normalization-type ops only, so the walk stops
    at the last layer of the network (a Gemm, MatMul, Sub...) and never blocks the network itself.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    tail: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen or node.op_type not in _NORMALIZATION_OPS:
            continue
        seen.add(node.name)
        tail.append(node.name)
        stack.extend(node.input)
    return tail


_CONTAINERS = (torch.nn.ModuleList, torch.nn.ModuleDict)


def preprocessing_scopes(module: torch.nn.Module, root: str = "/module") -> list[str]:
    """ONNX node-name prefixes of ``module``'s preprocessing submodules (class name ending in
    ``Preprocess``: ``imsim.models.Preprocess``, ``imsim.clip.ClipPreprocess``...).

    The TorchScript exporter names a node after the chain of module scopes it ran in: one
    component per module whose forward ran (containers such as ``ModuleList`` have none), each
    its attribute name, or ``parent.index`` for a numbered child (``/module/network/layers/
    layers.3/Pad``). ``root`` is the scope of ``module`` itself (``export_onnx`` wraps it as
    ``module``).
    """
    mods = dict(module.named_modules())
    scopes = []
    for name, m in mods.items():
        if not name or not type(m).__name__.endswith("Preprocess"):
            continue
        parts = name.split(".")
        components = []
        for i in range(len(parts)):
            if isinstance(mods[".".join(parts[: i + 1])], _CONTAINERS):
                continue
            start = max(j for j in range(i + 1) if not parts[j].isdigit())
            components.append(".".join(parts[start : i + 1]))
        scopes.append("/".join([root, *components]) + "/")
    return scopes


def preprocessing_nodes(model: onnx.ModelProto, scopes: Iterable[str]) -> list[str]:
    """Names of the nodes inside the ``scopes`` (``preprocessing_scopes``), and of the casts that
    read a graph input directly (the uint8 -> float conversion ahead of the preprocessing)."""
    scopes = tuple(scopes)
    inputs = {i.name for i in model.graph.input}
    return [
        n.name
        for n in model.graph.node
        if (scopes and n.name.startswith(scopes))
        or (n.op_type == "Cast" and any(i in inputs for i in n.input))
    ]


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def remove_cast_round_trips(model: onnx.ModelProto) -> int:
    """Drop FP32 -> FP16 -> FP32 cast pairs; returns how many were removed.

    The converter casts every kept-FP32 node's output back to FP16 and the next kept node's input
    to FP32 again, so a chain of FP32 ops (the final normalization, the graph output) would still
    round its intermediate tensors to FP16. Consumers of the second cast read the FP32 tensor
    directly instead; a graph output keeps its name through an Identity.
    """
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    outputs = {o.name for o in graph.output}
    types = _element_types(model)
    removed = 0
    for node in list(graph.node):
        first = producer.get(node.input[0]) if node.input else None
        if _cast_to(node) != f32 or first is None or _cast_to(first) != f16:
            continue
        if types.get(first.input[0]) != f32:  # only a true FP32 -> FP16 -> FP32 round trip
            continue
        src, dst = first.input[0], node.output[0]
        if dst in outputs:
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = src
        else:
            for consumer in graph.node:
                for i, name in enumerate(consumer.input):
                    if name == dst:
                        consumer.input[i] = src
            graph.node.remove(node)
        removed += 1
    used = {name for n in graph.node for name in n.input} | outputs
    for node in list(graph.node):  # first casts nobody reads any more
        if node.op_type == "Cast" and not any(o in used for o in node.output):
            graph.node.remove(node)
    del graph.value_info[:]  # stale for rewired tensors; shape inference recomputes it
    return removed


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type the graph states (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


# Ops that only move or reshape data: exact in FP16, so keeping one FP32 never helps accuracy.
LAYOUT_OPS = {
    "Shape",
    "Constant",
    "ConstantOfShape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Reshape",
    "Slice",
    "Transpose",
    "Flatten",
    "Expand",
    "Identity",
    "Cast",
    "Pad",
    "Split",
}


def fp32_op_types(fp32_ops: Sequence[str] = FP32_OPS) -> list[str]:
    """The op types kept FP32 everywhere: ``fp32_ops`` and ONNX Runtime's default block list."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return sorted(set(fp32_ops) | set(DEFAULT_OP_BLOCK_LIST))


def convertible_nodes(model: onnx.ModelProto, preprocessing: Sequence[str] = ()) -> list[str]:
    """The computing nodes ``to_fp16`` runs in FP16 (not a kept op type, not the preprocessing or
    the normalization, not a layout op): the units the FP32 fallback (``export.gate``) chooses
    among."""
    kept = set(normalization_tail(model)) | set(preprocessing_nodes(model, preprocessing))
    types = set(fp32_op_types()) | LAYOUT_OPS
    return [n.name for n in model.graph.node if n.name not in kept and n.op_type not in types]


def to_fp16(
    model: onnx.ModelProto,
    preprocessing: Sequence[str] = (),
    fp32_ops: Sequence[str] = FP32_OPS,
    keep_fp32: Sequence[str] = (),
) -> tuple[onnx.ModelProto, dict]:
    """The FP16 graph of an FP32 export, and what was kept in FP32. ``preprocessing``: the node
    name prefixes of the preprocessing (``preprocessing_scopes`` of the exported module);
    ``fp32_ops``: the op types kept FP32 everywhere (with ONNX Runtime's default block list);
    ``keep_fp32``: further node names kept FP32 (the fallback ``export --gate`` finds)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    unnamed = [n for n in model.graph.node if not n.name]
    for i, node in enumerate(unnamed):  # node_block_list matches by name
        node.name = f"unnamed_{node.op_type}_{i}"
    unknown = sorted(set(keep_fp32) - {n.name for n in model.graph.node})
    if unknown:
        raise ValueError(f"no node named {unknown[0]!r} to keep in FP32")
    ops = fp32_op_types(fp32_ops)
    tail = normalization_tail(model)
    pre = preprocessing_nodes(model, preprocessing)
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=ops,
        node_block_list=[*tail, *pre, *keep_fp32],
    )
    # The converter appends its Cast nodes at the end of the node list; ONNX requires
    # topological order (ONNX Runtime sorts for itself, onnx.checker and TensorRT do not).
    removed = remove_cast_round_trips(converted)
    wrapped = OnnxModel(converted)
    wrapped.topological_sort()
    info = {
        "fp32_op_types": ops,
        "fp32_nodes": tail,
        "fp32_preprocessing": {"scopes": list(preprocessing), "nodes": pre},
        "fp32_fallback": list(keep_fp32),
        "cast_round_trips_removed": removed,
    }
    return wrapped.model, info
