"""Each backend owns its flags, precisions and options; precision and thread counts are checked in
one place each (``Backend.check_precision``, ``check_threads``)."""

from __future__ import annotations

import argparse

import pytest

from imsim import hardware
from imsim.backends import BackendOptions, backend_class, list_backends, options_from_args
from imsim.backends.base import check_threads
from imsim.backends.onnxruntime_backend import OnnxRuntimeOptions
from imsim.backends.torch_backend import TorchOptions
from imsim.cli import add_backend_args
from imsim.errors import UserError
from tests.machines import T4, ZEN3


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    add_backend_args(p, required=True)
    return p.parse_args(list(argv))


def test_each_backend_builds_its_own_options_from_its_own_flags():
    flags = ["--compile", "--no-channels-last", "--ort-provider", "cuda", "--threads", "3"]
    torch_opts = options_from_args(parse("--backend", "torch", *flags))
    assert torch_opts == TorchOptions(
        precision="fp32", threads=3, channels_last=False, compile=True
    )
    ort = options_from_args(parse("--backend", "onnxruntime", *flags, "--ort-opt-level", "basic"))
    assert ort == OnnxRuntimeOptions(
        precision="fp32", threads=3, ort_provider="cuda", ort_opt_level="basic"
    )
    assert "compile" not in ort.to_dict() and "ort_provider" not in torch_opts.to_dict()
    trt = options_from_args(parse("--backend", "trt", "--engine-dir", "e"))
    assert type(trt) is BackendOptions and trt.precision == "fp16" and trt.engine_dir == "e"


def test_plain_options_take_the_backends_defaults_and_foreign_ones_are_refused():
    torch_cls, ort_cls = backend_class("torch"), backend_class("onnxruntime")
    assert torch_cls.checked_options(BackendOptions(threads=2)) == TorchOptions(
        precision="fp32", threads=2
    )
    assert backend_class("trt").checked_options(BackendOptions()).precision == "fp16"
    with pytest.raises(TypeError, match="takes OnnxRuntimeOptions, not TorchOptions"):
        ort_cls.checked_options(TorchOptions())


@pytest.mark.parametrize(
    ("backend", "precision", "message"),
    [
        ("torch", "int8", "backend 'torch' runs fp32, fp16 or bf16, not 'int8'"),
        ("onnxruntime", "bf16", "backend 'onnxruntime' runs fp32, fp16 or int8, not 'bf16'"),
        ("trt", "bf16", "backend 'trt' runs fp16, fp32 or int8, not 'bf16'"),
        ("openvino", "fp16", "backend 'openvino' runs fp32, bf16 or int8, not 'fp16'"),
    ],
)
def test_one_precision_check_for_every_backend(backend, precision, message):
    cls = backend_class(backend)
    assert cls.check_precision(None) == cls.default_precision
    with pytest.raises(UserError, match=message):
        cls.check_precision(precision)
    with pytest.raises(UserError, match=message):
        cls.checked_options(BackendOptions(precision=precision))


def test_one_thread_check():
    assert check_threads(None) is None and check_threads(4) == 4
    for name in list_backends():
        with pytest.raises(UserError, match="threads must be >= 1, got 0"):
            backend_class(name).checked_options(BackendOptions(threads=0))


def test_one_emulated_precision_warning():
    with hardware.forced(ZEN3):
        line = hardware.emulated_warning("backend 'torch'", "bf16", "cpu")
        assert line.startswith("warning: backend 'torch' runs bf16 (emulated) on AMD EPYC Zen 3")
        assert "which only emulates it (natively: fp32)" in line
        # A runtime that did not use a precision the device has says so in its own label.
        line = hardware.emulated_warning("backend 'openvino'", "fp32", "cpu", "int8 (ran as x)")
        assert "runs int8 (ran as x)" in line and "native but the runtime did not use it" in line
    with hardware.forced(T4):
        line = hardware.emulated_warning("training (--amp)", "bf16", "cuda")
        assert "Tesla T4, which only emulates it" in line
