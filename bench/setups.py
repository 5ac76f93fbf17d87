"""``python -m bench.setups fps|parity [--device D]``: the backend setups ``make bench`` sweeps.

The sweep never picks a precision the device only emulates (bf16 on an AVX2-only CPU runs 10-100x
slower than fp32 and says nothing about deployment speed). One exception, for parity only: the
FP16 ONNX is the graph TensorRT builds, and ONNX Runtime on the CPU is where it is checked, so
``onnxruntime fp16`` is always in the parity sweep (its fps run, where fp16 is emulated, is not).
Prints one ``backend:precision`` per line, for the Makefile.
"""

from __future__ import annotations

import argparse

from imsim.backends import backend_class
from imsim.cli import run
from imsim.hardware import Capabilities, capabilities

# (backend, precision) beyond the torch fp32 reference, in the order the report lists them.
CPU_SETUPS = (
    ("torch", "bf16"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "fp16"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
)
CONTRACT_CHECKS = (("onnxruntime", "fp16"),)  # checked by parity even where fp16 is emulated


def default_setups(caps: Capabilities, purpose: str) -> list[tuple[str, str]]:
    """The setups a default sweep runs for ``purpose`` (``fps`` or ``parity``) on ``caps``, each
    one its backend runs (``Backend.check_precision``)."""
    if purpose not in ("fps", "parity"):
        raise ValueError(f"purpose must be fps or parity, not {purpose!r}")
    out = []
    for backend, precision in CPU_SETUPS:
        backend_class(backend).check_precision(precision)
        if caps.native(precision) or (
            purpose == "parity" and (backend, precision) in CONTRACT_CHECKS
        ):
            out.append((backend, precision))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.setups", description=__doc__.split("\n")[0])
    p.add_argument("purpose", choices=("fps", "parity"))
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    for backend, precision in default_setups(capabilities(args.device), args.purpose):
        print(f"{backend}:{precision}")
    return 0


if __name__ == "__main__":
    run(main)
