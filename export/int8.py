"""The INT8 variant of an exported graph: explicit quantization (QDQ), calibrated on seen classes.

``onnxruntime.quantization.quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs in the
FP32 graph, with the settings TensorRT's explicit quantization accepts, so the file ONNX Runtime
verifies here is the one TensorRT builds strongly typed (``engines.build --precision int8``):
- signed INT8, symmetric activations and weights: every zero point is 0 ("TensorRT employs a
  symmetric quantization scheme", TensorRT developer guide, "Working with Quantized Types");
  symmetric INT8 weights use [-127, 127];
- weights per output channel (Conv: axis 0; MatMul/Gemm: the output axis), activations per tensor;
  ``weight_bits=7`` puts the weights on a 7-bit grid ([-64, 64], still INT8 with zero point 0) for
  OpenVINO on x86 CPUs without VNNI: there oneDNN multiplies u8 activations by s8 weights with
  AVX2's ``vpmaddubsw``, which adds pairs of products in 16 bits with saturation. On this
  AVX2-only Zen 3, OpenVINO ran the test ConvNet's 8-bit-weight graph at cosine 0.964 against
  PyTorch (ONNX Runtime: 0.99996 on the same graph), with 7-bit weights both gave 0.99993; the
  trained CIFAR ResNet-20 failed the gate on OpenVINO with 8-bit weights (cosine min 0.829) and
  passed with 7-bit ones (0.994; the gate's fallback kept its stem conv in FP32 for them);
- only the matrix ops (Conv, MatMul, Gemm) are quantized, and only at their inputs: their outputs
  stay float (``OpTypesToExcludeOutputQuantization``), so the accumulation, the residual adds and
  the embedding itself are float, and biases stay float (``QuantizeBias`` off: a bias quantized to
  INT32 would need an INT32 DequantizeLinear, which TensorRT does not take);
- the preprocessing (the uint8 input cast and the ``*Preprocess`` modules, including CLIP's
  resampling MatMuls) and the final L2 normalization are excluded by node name, as for FP16.

Calibration uses seen-class training images only (``calibration_set``: a fixed-seed sample spread
evenly over the seen classes); an unseen class would leak the evaluation classes into the scales.
The calibration ranges are cached in a file so the FP32 fallback search (``export.gate``)
re-quantizes with other exclusions without calibrating again.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from export.fp16 import normalization_tail, preprocessing_nodes
from export.graph import INPUT_NAME
from imsim.data.types import Split
from imsim.errors import UserError

MATRIX_OPS = ("Conv", "MatMul", "Gemm")
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
CALIBRATION_BATCH = 32
# What quantize_static is told beyond its arguments (recorded in the sidecar).
EXTRA_OPTIONS: dict[str, Any] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "OpTypesToExcludeOutputQuantization": list(MATRIX_OPS),
}


@dataclass(frozen=True)
class Calibration:
    """The calibration images and what they are (recorded in the sidecar)."""

    images: np.ndarray
    info: dict[str, Any]


def calibration_set(
    split: Split,
    classes: Sequence[int],
    class_names: Sequence[str],
    count: int,
    seed: int,
    dataset: str,
) -> Calibration:
    """``count`` images of ``classes`` only, drawn with ``seed``, as evenly over the classes as
    their counts allow (the first ``count % len(classes)`` classes get one more).

    ``split`` is the training split; images of any other class are never looked at, so passing
    the seen classes guarantees the scales never saw an unseen class.
    """
    classes = sorted({int(c) for c in classes})
    if not classes:
        raise UserError("calibration needs at least one seen class")
    if count < 1:
        raise UserError(f"--calibration-images must be >= 1, got {count}")
    k = len(classes)
    rng = np.random.default_rng(seed)
    picks = []
    for i, c in enumerate(classes):
        want = count // k + (1 if i < count % k else 0)
        pool = np.flatnonzero(split.labels == c)
        if len(pool) < want:
            raise UserError(
                f"class {class_names[c]!r} has {len(pool)} training images, fewer than the "
                f"{want} calibration images it should give; lower --calibration-images"
            )
        picks.append(np.sort(rng.choice(pool, want, replace=False)))
    idx = np.concatenate(picks)
    info = {
        "dataset": dataset,
        "split": "train",
        "classes": [class_names[c] for c in classes],
        "count": len(idx),
        "per_class": {class_names[c]: len(p) for c, p in zip(classes, picks, strict=True)},
        "seed": seed,
    }
    return Calibration(np.ascontiguousarray(split.images[idx]), info)


class ImageReader:
    """``CalibrationDataReader`` over uint8 images, in batches (the graph's one input)."""

    def __init__(self, images: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self.batches: Iterator[np.ndarray] = (
            images[i : i + batch] for i in range(0, len(images), batch)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self.batches, None)
        return None if b is None else {INPUT_NAME: b}


def name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes a name: exclusions are by node name."""
    for i, node in enumerate(n for n in model.graph.node if not n.name):
        node.name = f"unnamed_{node.op_type}_{i}"


def float_nodes(model: onnx.ModelProto, preprocessing: Sequence[str]) -> dict[str, list[str]]:
    """The nodes that always stay float: the preprocessing (with the input cast) and the final
    normalization."""
    return {
        "preprocessing": preprocessing_nodes(model, preprocessing),
        "normalization": normalization_tail(model),
    }


def quantizable_nodes(model: onnx.ModelProto, preprocessing: Sequence[str]) -> list[str]:
    """The matrix ops the quantizer may quantize: every Conv/MatMul/Gemm outside the preprocessing
    and the normalization (the units the FP32 fallback chooses among)."""
    fixed = {n for names in float_nodes(model, preprocessing).values() for n in names}
    return [n.name for n in model.graph.node if n.op_type in MATRIX_OPS and n.name not in fixed]


WEIGHT_BITS = (8, 7)


def quantizer_settings(method: str, weight_bits: int = 8) -> dict[str, Any]:
    """How the graph is quantized, for the sidecar."""
    import onnxruntime

    grid = "[-127, 127]" if weight_bits == 8 else "[-64, 64] (reduce_range)"
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "onnxruntime": onnxruntime.__version__,
        "format": "QDQ",
        "op_types": list(MATRIX_OPS),
        "activations": "int8, per tensor, symmetric (zero point 0)",
        "weights": f"int8 {grid}, per channel, symmetric (zero point 0)",
        "weight_bits": weight_bits,
        "calibration_method": method,
        "extra_options": EXTRA_OPTIONS,
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer's advice on stdout and the root logger (pre-processing hints, progress of
    histogram calibration): not for the user of this command."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def to_int8(
    fp32: Path,
    out: Path,
    calibration: np.ndarray | None,
    preprocessing: Sequence[str] = (),
    keep_fp32: Sequence[str] = (),
    method: str = "minmax",
    cache: Path | None = None,
    weight_bits: int = 8,
) -> dict[str, Any]:
    """Write the QDQ graph of the FP32 export ``fp32`` to ``out``; returns what was done.

    ``keep_fp32``: further node names left unquantized (the FP32 fallback). ``cache``: the
    calibration cache file (read when it exists, else written); ``calibration`` may be None only
    when the cache exists. ``weight_bits``: 8, or 7 for OpenVINO on CPUs without VNNI.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise UserError(
            f"unknown calibration method {method!r}; use {', '.join(CALIBRATION_METHODS)}"
        )
    if weight_bits not in WEIGHT_BITS:
        raise UserError(f"INT8 weights use 8 or 7 bits, not {weight_bits}")
    model = onnx.load(str(fp32))
    name_nodes(model)
    fixed = float_nodes(model, preprocessing)
    known = {n.name for n in model.graph.node}
    unknown = sorted(set(keep_fp32) - known)
    if unknown:
        raise UserError(f"no node named {unknown[0]!r} in {fp32} to keep in FP32")
    exclude = sorted({*fixed["preprocessing"], *fixed["normalization"], *keep_fp32})
    reader = ImageReader(calibration) if calibration is not None else None
    with _quiet():
        quantize_static(
            model,
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(MATRIX_OPS),
            per_channel=True,
            reduce_range=weight_bits == 7,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
            extra_options=dict(EXTRA_OPTIONS),
            calibration_cache_path=str(cache) if cache is not None else None,
        )
    report = qdq_report(onnx.load(str(out)))
    problems = report.pop("problems")
    if problems:
        raise UserError(f"the INT8 graph breaks TensorRT's explicit quantization: {problems[0]}")
    return {
        "float_nodes": fixed,
        "fp32_fallback": list(keep_fp32),
        "graph": report,
    }


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def qdq_report(model: onnx.ModelProto) -> dict[str, Any]:
    """What a QDQ graph quantizes, and what in it TensorRT's explicit quantization would refuse.

    Returns the QuantizeLinear / DequantizeLinear counts, the matrix ops whose inputs are all
    dequantized INT8 (``int8_matrix_ops``) and the others (``float_matrix_ops``), and
    ``problems``: zero points that are not 0, quantized types other than INT8, and INT8 weights
    outside [-127, 127].
    """
    inits = _initializers(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    problems: list[str] = []
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    for node in model.graph.node:
        if node.op_type not in counts:
            continue
        counts[node.op_type] += 1
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is not None and (zp.dtype != np.int8 or np.any(zp != 0)):
            problems.append(f"{node.name} has zero point {zp.ravel()[:4]} ({zp.dtype}), not int8 0")
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            w = inits[node.input[0]]
            if w.dtype != np.int8:
                problems.append(f"{node.name} dequantizes {w.dtype}, not int8")
            elif w.size and w.min() < -127:
                problems.append(f"{node.name} holds the weight -128 (TensorRT: [-127, 127])")
    int8_ops, float_ops = [], []
    for node in model.graph.node:
        if node.op_type not in MATRIX_OPS:
            continue
        srcs = [producer.get(i) for i in node.input[:2]]
        quantized = all(s is not None and s.op_type == "DequantizeLinear" for s in srcs)
        (int8_ops if quantized else float_ops).append(node.name)
    return {
        "quantize_linear": counts["QuantizeLinear"],
        "dequantize_linear": counts["DequantizeLinear"],
        "int8_matrix_ops": len(int8_ops),
        "float_matrix_ops": float_ops,
        "problems": problems,
    }
