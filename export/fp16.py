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
    wrapped = OnnxModel(converted)
    wrapped.topological_sort()
    return wrapped.model, {"fp32_op_types": ops, "fp32_nodes": tail}
