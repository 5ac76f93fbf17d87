"""A backend setup's identity: the one definition of which runs count as the same setup, how a
setup is named in a report, and the file-name stem of its results.

A setup is a backend, its precision, its device and the options that change its speed or its
numbers (torch: ``compile``, channels-last; onnxruntime: provider, graph optimization). Every
function here reads a backend record, the dict ``Backend.describe()`` returns and results files
store under ``backend``, so ``bench.fps``, ``bench.parity`` and the report agree on it; the stem
also reads the options the run was asked for (``BackendOptions.to_dict()``), because it names
only what was given explicitly. Pure Python: reading results needs no backend runtime.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def _weight_bits(backend: Mapping[str, Any]) -> int | None:
    """The INT8 graph's weight bits when not the default 8 (``export --weight-bits``): another
    graph with other numerics, so another setup."""
    bits = backend.get("int8_weight_bits")
    return None if bits in (None, 8) else int(bits)


def setup_key(backend: Mapping[str, Any]) -> tuple:
    """What makes two runs of a backend the same setup (a parity result speaks for an fps run
    only when this matches)."""
    name = backend.get("backend")
    key: tuple = (name, backend.get("precision"), backend.get("device"))
    if name == "torch":
        key += (bool(backend.get("compile")), bool(backend.get("channels_last")))
    elif name == "onnxruntime":
        key += (backend.get("provider"), backend.get("graph_optimization"))
    bits = _weight_bits(backend)
    if bits:
        key += (f"w{bits}",)
    return key


def setup_label(backend: Mapping[str, Any]) -> str:
    """Backend, precision and the options that change speed, e.g. ``torch bf16 compile``."""
    precision = backend.get("precision_label") or backend.get("precision", "?")
    parts = [backend.get("backend", "?"), precision]
    if backend.get("backend") == "torch":
        parts += ["compile"] if backend.get("compile") else []
        parts += [] if backend.get("channels_last", True) else ["NCHW"]
    if backend.get("backend") == "onnxruntime":
        provider = str(backend.get("provider", ""))
        if provider and provider != "CPUExecutionProvider":
            parts.append(provider.removesuffix("ExecutionProvider"))
        parts.append(f"opt {backend.get('graph_optimization')}")
    if bits := _weight_bits(backend):
        parts.append(f"{bits}-bit weights")
    if backend.get("threads"):
        parts.append(f"{backend['threads']} threads")
    return " ".join(parts)


def slug(text: str) -> str:
    """Lower case, runs of anything but letters, digits, ``.`` and ``_`` as one ``-``."""
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-")


def setup_stem(method: str, backend: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """``method-backend[-variant]-precision-device``, e.g. ``resnet56-torch-compile-bf16-cpu``:
    the results file name of a setup. ``backend``: the backend record (the GPU's name, when it
    has one, stands for the device); ``options``: what was asked for, of which only explicit
    choices (``--compile``, NCHW, a non-CPU provider, an optimization level, threads) show."""
    name = str(backend.get("backend"))
    variant = []
    if name == "torch":
        variant += ["compile"] if options.get("compile") else []
        variant += [] if options.get("channels_last", True) else ["nchw"]
    if name == "onnxruntime":
        provider, level = options.get("ort_provider"), options.get("ort_opt_level")
        variant += [provider] if provider not in (None, "cpu") else []
        variant += [f"opt-{level}"] if level else []
    variant += [f"t{options['threads']}"] if options.get("threads") else []
    device = backend.get("gpu") or backend.get("device")
    parts = [method, name, *variant, str(backend.get("precision")), str(device)]
    return "-".join(slug(p) for p in parts)
