"""What the hardware runs natively: the one place that decides which precisions are fast here.

Reduced precision is only worth running where the hardware computes it natively. Elsewhere the
libraries emulate it: PyTorch runs bf16 on an AVX2-only CPU 10-100x slower than fp32, and
``torch.cuda.is_bf16_supported()`` says True on a T4 because it counts emulation. So every
``auto`` choice (training's ``--amp auto``, ``make bench``'s sweep) asks ``capabilities(device)``
and picks only native precisions; a precision asked for explicitly still runs, with a one-line
warning when it is emulated; and results record the capabilities and name an emulated precision
as such (``bf16 (emulated)``), so nobody ranks an emulated row against a native one.

CPU (x86 feature flags from ``/proc/cpuinfo``, PyTorch's own kernel choice beside them):
- bf16 is native with AVX512-BF16 or AMX-BF16 (oneDNN's bf16 dot products and tiles); oneDNN
  also runs bf16 on plain AVX-512 by converting to fp32, which is not counted as native.
- fp16 is native with AVX512-FP16 or AMX-FP16.
- int8 is native with AVX2 or newer: its 8-bit multiply-add (``vpmaddubsw`` + ``vpmaddwd``,
  u8 x s8 into 32-bit sums) is what oneDNN, OpenVINO and ONNX Runtime's MLAS run INT8 layers on
  there; VNNI (AVX512-VNNI or AVX-VNNI: the fused ``vpdpbusd``) makes it faster and is recorded
  (``vnni``) so results can tell the two apart. Native says the instructions exist, not that a
  runtime's kernels beat fp32: on an AVX2-only Zen 3 (2 threads), OpenVINO ran the INT8 ResNet-20
  about 2x as fast as its fp32 at batch 256, ONNX Runtime's QDQ kernels about half as fast as its
  fp32, and the INT8 ViT-tiny was slower than fp32 on both at batch 32: ``bench.fps`` measures it.
CUDA: native bf16 from ``is_bf16_supported(including_emulation=False)`` (compute capability
8.0+), fp16 tensor cores from compute capability 7.0+ (a P100, 6.0, has fp16 math without them),
int8 from 6.1+ (DP4A 8-bit dot products, the least TensorRT's INT8 kernels need; INT8 tensor cores
from 7.2/7.5).

Tests inject capabilities with ``forced(...)`` so that the "no native bf16", "no AVX-512" and
"CUDA without bf16" paths run on any machine.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "fp16", "bf16")
CPU_FIELDS = ("kind", "name", "isa", "avx512", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16")
CPU_FIELDS += ("vnni",)
CUDA_FIELDS = ("kind", "name", "compute_capability", "cuda_bf16", "fp16_tensor_cores")
EMULATED = "emulated"


@dataclass(frozen=True)
class Capabilities:
    """What one device computes natively. ``kind`` is ``cpu`` or ``cuda``."""

    kind: str
    name: str
    # CPU: PyTorch's kernel level (``DEFAULT``, ``AVX2``, ``AVX512``) and the decisive flags.
    isa: str | None = None
    avx512: bool = False
    avx512_bf16: bool = False
    avx512_fp16: bool = False
    amx_bf16: bool = False
    amx_fp16: bool = False
    vnni: bool = False
    # CUDA
    compute_capability: tuple[int, int] | None = None
    cuda_bf16: bool = False
    fp16_tensor_cores: bool = False

    @property
    def native_bf16(self) -> bool:
        if self.kind == "cuda":
            return self.cuda_bf16
        return self.avx512_bf16 or self.amx_bf16

    @property
    def native_int8(self) -> bool:
        if self.kind == "cuda":
            return self.compute_capability is not None and self.compute_capability >= (6, 1)
        return self.vnni or (self.isa or "").startswith(("AVX2", "AVX512"))

    @property
    def native_fp16(self) -> bool:
        if self.kind == "cuda":
            return self.fp16_tensor_cores
        return self.avx512_fp16 or self.amx_fp16

    def native(self, precision: str) -> bool:
        """Whether ``precision`` (fp32, fp16, bf16, int8) runs natively on this device."""
        if precision == "fp32":
            return True
        if precision == "bf16":
            return self.native_bf16
        if precision == "fp16":
            return self.native_fp16
        if precision == "int8":
            return self.native_int8
        raise ValueError(f"unknown precision {precision!r}")

    def native_precisions(self) -> list[str]:
        return [p for p in PRECISIONS if self.native(p)]

    def label(self, precision: str) -> str:
        """``precision``, or e.g. ``bf16 (emulated)`` where this device only emulates it."""
        return precision if self.native(precision) else f"{precision} ({EMULATED})"

    def to_dict(self) -> dict[str, Any]:
        own = CPU_FIELDS if self.kind == "cpu" else CUDA_FIELDS
        d = {k: v for k, v in asdict(self).items() if k in own}
        if self.compute_capability is not None:
            d["compute_capability"] = ".".join(map(str, self.compute_capability))
        d["native"] = self.native_precisions()
        return d


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), flags


def probe_cpu() -> Capabilities:
    import torch

    name, flags = cpu_info()
    isa = torch.backends.cpu.get_cpu_capability()
    return Capabilities(
        kind="cpu",
        name=name,
        isa=isa,
        avx512="avx512f" in flags or isa.startswith("AVX512"),
        avx512_bf16="avx512_bf16" in flags,
        avx512_fp16="avx512_fp16" in flags,
        amx_bf16="amx_bf16" in flags,
        amx_fp16="amx_fp16" in flags,
        vnni="avx512_vnni" in flags or "avx_vnni" in flags,
    )


def probe_cuda(index: int) -> Capabilities:
    import torch

    cc = torch.cuda.get_device_capability(index)
    try:
        with torch.cuda.device(index):
            bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the keyword: bf16 is native from Ampere (8.0) on
        bf16 = cc >= (8, 0)
    return Capabilities(
        kind="cuda",
        name=torch.cuda.get_device_name(index),
        compute_capability=cc,
        cuda_bf16=bf16,
        fp16_tensor_cores=cc >= (7, 0),
    )


@functools.cache
def _probe(kind: str, index: int) -> Capabilities:
    return probe_cuda(index) if kind == "cuda" else probe_cpu()


_forced: dict[str, Capabilities] = {}


def capabilities(device: Any = "cpu") -> Capabilities:
    """What ``device`` (``cpu``, ``cuda``, ``cuda:1`` or a ``torch.device``) runs natively."""
    import torch

    dev = torch.device(device)
    if dev.type in _forced:
        return _forced[dev.type]
    if dev.type == "cuda":
        return _probe("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    return _probe("cpu", 0)


@contextlib.contextmanager
def forced(caps: Capabilities) -> Iterator[Capabilities]:
    """Make ``capabilities()`` answer ``caps`` for its kind of device (tests, what-if runs)."""
    before = _forced.get(caps.kind)
    _forced[caps.kind] = caps
    try:
        yield caps
    finally:
        if before is None:
            _forced.pop(caps.kind, None)
        else:
            _forced[caps.kind] = before


def emulated_warning(what: str, precision: str, device: Any, label: str | None = None) -> str:
    """The one warning line, for training and backends alike, when ``what`` (``training
    (--amp)``, ``backend 'torch'``) runs ``precision`` on ``device`` but not natively. ``label``
    says what ran: by default the device's (``bf16 (emulated)``); a backend passes its own, e.g.
    OpenVINO's ``int8 (ran as fp32)`` where the device has int8 but the runtime did not use it."""
    caps = capabilities(device)
    why = (
        f"where {precision} is native but the runtime did not use it"
        if caps.native(precision)
        else "which only emulates it"
    )
    return (
        f"warning: {what} runs {label or caps.label(precision)} on {caps.name}, {why} "
        f"(natively: {', '.join(caps.native_precisions())}); expect it to be slow, "
        "and compare it only with other emulated runs"
    )


def warn_if_emulated(precision: str, device: Any, what: str) -> bool:
    """Print ``emulated_warning`` when ``precision`` is emulated on ``device``; True when it is
    native."""
    if capabilities(device).native(precision):
        return True
    print(emulated_warning(what, precision, device), file=sys.stderr)
    return False


def precision_tags(precision: str, device: Any) -> dict[str, Any]:
    """What a results record says about its precision: the label and whether it ran natively."""
    caps = capabilities(device)
    return {"precision_label": caps.label(precision), "precision_native": caps.native(precision)}
