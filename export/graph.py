"""Export a method's module to ONNX and verify a graph against the module before keeping it.

The graph takes uint8 NHWC images with a dynamic batch axis and returns the L2-normalized
embeddings: preprocessing lives inside, as it does in the module. Export uses the TorchScript
exporter (``dynamo=False``), which handles every method here at opset 17 and above.

Two steps make the graph clean for TensorRT and ONNX Runtime:
- the module runs once on the dummy batch before tracing (``warm``), so lazily built constants
  (CLIP's resampling matrices, cached per input size) already exist and enter the graph as
  initializers; traced cold, their construction (NonZero, ScatterND, Slice on DOUBLE tensors and a
  DOUBLE cast) was in the graph and ran on every inference;
- constants are folded (``fold_constants``, onnx-graphsurgeon, what Polygraphy's sanitizer uses):
  subgraphs that depend on no input, like the pads of the CIFAR ResNet's zero-padded shortcut
  (ConstantOfShape, Concat, Reshape, Slice, Transpose, Cast), become initializers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from imsim.errors import UserError
from imsim.methods.base import reference_runner
from imsim.parity import Tolerances, at_least, tensor_metrics

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
MIN_OPSET = 17
NORM_TOLERANCE = 1e-3  # |‖embedding‖ - 1| allowed in an exported graph's output


class UInt8Input(torch.nn.Module):
    """Casts the uint8 images to float before the method's module sees them.

    The module's own preprocessing then starts from float values 0-255 (identical results), and
    the graph's first op is the Cast: TensorRT accepts a uint8 network input only when it is
    converted to float right away.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images.to(torch.float32))


def export_onnx(
    module: torch.nn.Module, path: Path, image_size: tuple[int, int], opset: int = MIN_OPSET
) -> onnx.ModelProto:
    """Write the FP32 graph of ``module`` to ``path`` and return it after ``onnx.checker``."""
    if opset < MIN_OPSET:
        raise UserError(f"--opset must be >= {MIN_OPSET} (LayerNormalization), got {opset}")
    h, w = image_size
    dummy = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8)
    wrapped = UInt8Input(module).eval()
    warm(wrapped, dummy)
    # nn.MultiheadAttention's inference fast path (taken when no weight requires grad, as in a
    # frozen CLIP) is one fused op with no ONNX export; the regular path computes the same thing.
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            # The exporter's deprecation notes and tracer remarks; a trace that does not generalize
            # is caught by ``verify`` on other batch sizes and real images instead.
            for category in (
                DeprecationWarning,
                FutureWarning,
                UserWarning,
                torch.jit.TracerWarning,
            ):
                warnings.simplefilter("ignore", category)
            torch.onnx.export(
                wrapped,
                (dummy,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    model = fold_constants(onnx.load(str(path)))
    onnx.save(model, str(path))
    check_graph(model)
    return model


def warm(module: torch.nn.Module, dummy: torch.Tensor) -> None:
    """One forward pass on ``dummy`` before tracing: caches a module fills on first use (CLIP's
    per-size resampling matrices) are then plain tensors the tracer records as constants."""
    with torch.no_grad():
        module(dummy)


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every subgraph that depends on no graph input computed ahead (evaluated by
    ONNX Runtime through onnx-graphsurgeon), unused nodes removed, topologically sorted.

    Shapes are inferred first, so dimensions that are static (all but the batch axis) fold too:
    the shape arithmetic the exporter emits around attention shrinks to the parts that really
    depend on the batch size.
    """
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    graph.fold_constants().cleanup().toposort()
    folded = gs.export_onnx(graph)
    folded.ir_version = model.ir_version  # keep what the exporter chose (runtimes check it)
    return folded


def check_graph(model: onnx.ModelProto) -> None:
    """``onnx.checker`` with shape inference, as a one-line error."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"exported graph is not valid ONNX: {first}") from None


def verify(
    module: torch.nn.Module,
    path: Path,
    precision: str,
    sets: dict[str, np.ndarray],
    tol: Tolerances,
    label: str,
) -> dict[str, dict[str, float]]:
    """Run the graph on ONNX Runtime (CPU) against the module on each image set; raise on FAIL.

    Both run as runners, as in ``bench.parity``: the module on the reference runner (what the
    method's own embedding runs on), the graph on the onnxruntime backend; they are compared by
    ``imsim.parity.tensor_metrics``. Returns the metrics per set, recorded in the sidecar.
    """
    from imsim.backends.onnxruntime_backend import OnnxRuntimeBackend

    reference = reference_runner(module, "cpu")
    size = list(next(iter(sets.values())).shape[1:3])  # every set has the exported size
    side = {"precision": precision, "input_size": size}
    graph = OnnxRuntimeBackend(path, precision, "cpu", provider="cpu", sidecar=side)
    report: dict[str, dict[str, float]] = {}
    for name, images in sets.items():
        ref = reference.embed(images)
        out = graph.embed(images)
        if out.shape != ref.shape:
            raise UserError(f"{label} returns {out.shape} on {name} images, PyTorch {ref.shape}")
        m = tensor_metrics(ref, out)
        m["norm_error_max"] = float(np.max(np.abs(np.linalg.norm(out, axis=1) - 1.0)))
        m["n"] = len(images)
        report[name] = m
        ok = (
            at_least(m["cosine_min"], tol.cos_min)
            and at_least(m["cosine_mean"], tol.cos_mean)
            and m["norm_error_max"] <= NORM_TOLERANCE
        )
        if not ok:
            raise UserError(
                f"{label} ({precision}) does not match PyTorch on {name} images: cosine min "
                f"{m['cosine_min']:.7f} (need >= {tol.cos_min}), mean {m['cosine_mean']:.7f} "
                f"(need >= {tol.cos_mean}), output norm off by {m['norm_error_max']:.2e} "
                f"(need <= {NORM_TOLERANCE}); the file was not kept"
            )
    return report
