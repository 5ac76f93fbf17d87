"""The FP16 variant of an exported graph: FP16 weights and math, sensitive ops kept in FP32.

Uses ``onnxruntime.transformers.float16.convert_float_to_float16`` (onnxconverter-common's copy
of it fails on ViT graphs) with FP32 inputs/outputs and a block list: normalization layers,
softmax, reductions, powers/roots/divisions/exponentials, and every node of the final L2
normalization, found by walking back from the graph output. The same graph is what TensorRT 11
builds directly (strong typing), and ONNX Runtime on the CPU runs it, so FP16 numerics are
testable without a GPU.
"""

from __future__ import annotations

import onnx

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
    "Div",
    "Erf",
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


def to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """The FP16 graph of an FP32 export, and what was kept in FP32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    unnamed = [n for n in model.graph.node if not n.name]
    for i, node in enumerate(unnamed):  # node_block_list matches by name
        node.name = f"unnamed_{node.op_type}_{i}"
    ops = sorted(set(FP32_OPS) | set(DEFAULT_OP_BLOCK_LIST))
    tail = normalization_tail(model)
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=ops,
        node_block_list=tail,
    )
    # The converter appends its Cast nodes at the end of the node list; ONNX requires
    # topological order (ONNX Runtime sorts for itself, onnx.checker and TensorRT do not).
    removed = remove_cast_round_trips(converted)
    wrapped = OnnxModel(converted)
    wrapped.topological_sort()
    info = {"fp32_op_types": ops, "fp32_nodes": tail, "cast_round_trips_removed": removed}
    return wrapped.model, info
