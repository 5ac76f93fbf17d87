"""``torch``: the method's own module in PyTorch, eager or ``torch.compile``d, CPU or CUDA.

fp32 runs in strict IEEE fp32 (no TF32, no reduced-precision oneDNN matmuls): it is also the
reference ``bench.parity`` compares every backend with. fp16 and bf16 run under
``torch.autocast``, which keeps the ops PyTorch deems sensitive (LayerNorm, softmax, reductions)
in fp32 without the module knowing, so any method's module runs unchanged; the final L2
normalization is redone in fp32, like in the FP16 ONNX graph.

Autocast casts the weights of every matrix-multiply layer (linear, convolution, attention
projections) to the low precision again on each call. The backend casts those weights once
instead (``cast_matmul_weights``): for linear and convolution layers the same rounding, so
bit-identical results, without re-reading and re-writing every weight per batch. For
``nn.MultiheadAttention`` it also lets the module take its fused inference path, which autocast
alone does not (fp32 weights, low-precision input): a different order of the same low-precision
math (``bench.parity`` checks it) and 3.7 times the throughput of a ViT-B/32 at batch 32 here.

On CUDA that is not enough: the fast path is refused whenever ``torch.is_autocast_enabled()``,
which without a device argument reports CUDA autocast, so under the backend's own autocast every
attention block took the unfused path. ``attention_outside_autocast`` therefore runs each
``nn.MultiheadAttention`` with CUDA autocast switched off and its inputs cast to its (already
cast) weights' dtype: the same low-precision math, now on the fused path. It is not needed on
the CPU, whose autocast that check does not see.

``compile`` uses ``torch.compile`` (inductor) with ``freezing`` on the CPU: weights become
constants, so convolutions and linear layers run on pre-packed oneDNN weights and the
batch-norms fold into the convolutions. Each new batch size compiles once (``dynamic=False``:
static shapes let inductor pick the kernels for that shape); that time shows in ``bench.fps`` as
``first_step_s``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from imsim.backends.base import Backend, BackendOptions, check_threads, method_module
from imsim.errors import UserError
from imsim.methods.base import Embedder

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Turn off TF32 and other reduced-precision fp32 math while the block runs, then restore
    what was set: the settings are process-wide, and a reference run inside a training process
    (validation) must not slow the training's own fp32 math down."""
    spaces = [
        getattr(torch.backends.cuda, "matmul", None),
        getattr(torch.backends.cudnn, "conv", None),
        getattr(torch.backends.cudnn, "rnn", None),
        getattr(torch.backends.mkldnn, "matmul", None),
        getattr(torch.backends.mkldnn, "conv", None),
    ]
    spaces = [s for s in spaces if s is not None and hasattr(s, "fp32_precision")]
    matmul = torch.get_float32_matmul_precision()
    if spaces:  # torch >= 2.9: per-backend precision settings (mixing with allow_tf32 is refused)
        before = [s.fp32_precision for s in spaces]
    else:
        flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.set_float32_matmul_precision("highest")
        if spaces:
            for s in spaces:
                s.fp32_precision = "ieee"
        else:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        if spaces:
            for s, v in zip(spaces, before, strict=True):
                s.fp32_precision = v
        else:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
        torch.set_float32_matmul_precision(matmul)


# Layers whose forward autocast runs in the low precision (its "lower precision" op list:
# linear, conv*, matmul-based attention); their weights are cast ahead by ``cast_matmul_weights``.
_MATMUL_LAYERS = (
    torch.nn.Linear,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d,
)


def cast_matmul_weights(module: torch.nn.Module, dtype: torch.dtype) -> int:
    """Cast, in place, the floating weights and biases of the layers autocast would cast on every
    call (``_MATMUL_LAYERS`` and ``nn.MultiheadAttention``'s packed input projection); returns
    how many tensors were cast. Everything else (norms, embeddings, buffers) keeps its dtype."""
    n = 0
    for m in module.modules():
        names: tuple[str, ...] = ()
        if isinstance(m, _MATMUL_LAYERS):
            names = ("weight", "bias")
        elif isinstance(m, torch.nn.MultiheadAttention):
            names = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight")
            names += ("v_proj_weight",)
        for name in names:
            t = getattr(m, name, None)
            if isinstance(t, torch.nn.Parameter) and t.is_floating_point() and t.dtype != dtype:
                t.data = t.data.to(dtype)
                n += 1
    return n


def attention_outside_autocast(module: torch.nn.Module, device_type: str) -> int:
    """Make every ``nn.MultiheadAttention`` in ``module`` run with ``device_type`` autocast off
    and its floating inputs (query/key/value, float masks) cast to its in-projection weight's
    dtype, so its fused inference path is not refused for "autocast is enabled"; returns how
    many modules were changed. Call after ``cast_matmul_weights`` (the weights set the dtype)."""
    n = 0
    for m in module.modules():
        if isinstance(m, torch.nn.MultiheadAttention) and m.in_proj_weight is not None:
            m.forward = functools.partial(_attention_forward, m, device_type)
            n += 1
    return n


def _attention_forward(
    mha: torch.nn.MultiheadAttention, device_type: str, *args: Any, **kwargs: Any
) -> Any:
    dtype = mha.in_proj_weight.dtype
    cast: dict[int, torch.Tensor] = {}  # one cast per tensor: self-attention passes x, x, x

    def to(t: Any) -> Any:
        if not (isinstance(t, torch.Tensor) and t.is_floating_point()) or t.dtype == dtype:
            return t
        if id(t) not in cast:
            cast[id(t)] = t.to(dtype)
        return cast[id(t)]

    with torch.autocast(device_type, enabled=False):
        args = tuple(to(a) for a in args)
        kwargs = {k: to(v) for k, v in kwargs.items()}
        return torch.nn.MultiheadAttention.forward(mha, *args, **kwargs)


def require_device(device: str) -> torch.device:
    """The torch device, or a one-line error when CUDA is asked for and absent."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device {device!r} asked for but CUDA is not available here "
            "(no NVIDIA GPU or driver, or a CPU-only torch); use --device cpu"
        )
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device {device!r} is not supported; use cpu or cuda")
    return dev


@dataclass(frozen=True)
class TorchOptions(BackendOptions):
    """The torch backend's options: the common ones, memory layout and ``torch.compile``."""

    channels_last: bool = True
    compile: bool = False


class TorchBackend(Backend):
    name = "torch"
    precisions = ("fp32", "fp16", "bf16")
    options_type = TorchOptions

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("torch backend")
        g.add_argument("--compile", action="store_true", help="torch: torch.compile the module")
        g.add_argument(
            "--no-channels-last", action="store_true", help="torch: keep contiguous (NCHW) weights"
        )

    @classmethod
    def own_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"channels_last": not args.no_channels_last, "compile": args.compile}

    def __init__(
        self,
        module: torch.nn.Module,
        precision: str = "fp32",
        device: str = "cpu",
        channels_last: bool = True,
        compile: bool = False,
        threads: int | None = None,
    ) -> None:
        super().__init__(precision, device)
        self.torch_device = require_device(device)
        if check_threads(threads) is not None:
            torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool
        # A private copy when the backend changes the module (device, layout, weight dtype,
        # compilation): changing the method's own module would change it for everything else
        # that uses it (the parity reference included). The fp32 NCHW reference runs it as is.
        on_device = all(p.device == self.torch_device for p in module.parameters())
        changes = precision != "fp32" or channels_last or compile or not on_device
        mod = (copy.deepcopy(module) if changes else module).eval().to(self.torch_device)
        self.fused_attention = 0  # attention modules moved out of CUDA autocast
        if precision != "fp32":
            cast_matmul_weights(mod, DTYPES[precision])
            if self.torch_device.type == "cuda":
                self.fused_attention = attention_outside_autocast(mod, "cuda")
        if channels_last:
            mod = mod.to(memory_format=torch.channels_last)
        self.channels_last = channels_last
        self.threads = threads
        self.compiled = compile
        self.module = mod
        if compile:
            options = {"freezing": True} if self.torch_device.type == "cpu" else None
            self.module = torch.compile(mod, dynamic=False, options=options)

    @classmethod
    def from_embedder(cls, embedder: Embedder, options: BackendOptions) -> TorchBackend:
        own = cast(TorchOptions, cls.checked_options(options))
        return cls(
            method_module(embedder, cls.name),
            precision=own.precision,
            device=own.device,
            channels_last=own.channels_last,
            compile=own.compile,
            threads=own.threads,
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return strict_fp32()
        return torch.autocast(self.torch_device.type, dtype=DTYPES[self.precision])

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        # Zero-copy on the CPU; one host-to-device copy on CUDA.
        return torch.from_numpy(images).to(self.torch_device)

    def run_prepared(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            y = self.module(x)
            y = y.float()
            if self.precision != "fp32":
                y = F.normalize(y, dim=1, eps=1e-12)
        return y

    def fetch(self, y: torch.Tensor) -> np.ndarray:
        return y.cpu().numpy()

    def synchronize(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(channels_last=self.channels_last, compile=self.compiled)
        if self.threads is not None:
            d["threads"] = self.threads
        if self.torch_device.type == "cuda":
            d["gpu"] = torch.cuda.get_device_name(self.torch_device)
        if self.fused_attention:
            d["attention_outside_autocast"] = self.fused_attention
        return d
