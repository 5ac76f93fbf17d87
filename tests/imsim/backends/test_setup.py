"""A setup's identity (``imsim.backends.setup``): the key, label and file-name stem that fps,
parity and the report share. The expected values were taken from the three functions this
module replaced (``bench.report.setup_key``/``setup_label``, ``bench.fps.setup_name``), so a
result file keeps its name and a report groups runs exactly as before."""

from __future__ import annotations

import pytest

from imsim.backends.setup import setup_key, setup_label, setup_stem

RECORDS = [
    (
        {
            "backend": "torch",
            "precision": "bf16",
            "device": "cpu",
            "precision_label": "bf16 (emulated)",
            "compile": True,
            "channels_last": True,
            "threads": 2,
        },
        ("torch", "bf16", "cpu", True, True),
        "torch bf16 (emulated) compile 2 threads",
    ),
    (
        {
            "backend": "torch",
            "precision": "fp32",
            "device": "cpu",
            "precision_label": "fp32",
            "compile": False,
            "channels_last": False,
        },
        ("torch", "fp32", "cpu", False, False),
        "torch fp32 NCHW",
    ),
    # A record without channels_last: the key reads it as False, the label as channels-last.
    (
        {"backend": "torch", "precision": "fp16", "device": "cuda:0"},
        ("torch", "fp16", "cuda:0", False, False),
        "torch fp16",
    ),
    (
        {
            "backend": "onnxruntime",
            "precision": "fp16",
            "device": "cuda",
            "provider": "CUDAExecutionProvider",
            "graph_optimization": "all",
        },
        ("onnxruntime", "fp16", "cuda", "CUDAExecutionProvider", "all"),
        "onnxruntime fp16 CUDA opt all",
    ),
    (
        {
            "backend": "onnxruntime",
            "precision": "fp32",
            "device": "cpu",
            "provider": "CPUExecutionProvider",
            "graph_optimization": "extended",
            "threads": 4,
        },
        ("onnxruntime", "fp32", "cpu", "CPUExecutionProvider", "extended"),
        "onnxruntime fp32 opt extended 4 threads",
    ),
    (
        {
            "backend": "trt",
            "precision": "fp16",
            "device": "cuda:0",
            "precision_label": "fp16",
            "gpu": "NVIDIA H200",
        },
        ("trt", "fp16", "cuda:0"),
        "trt fp16",
    ),
    (
        {
            "backend": "openvino",
            "precision": "bf16",
            "device": "cpu",
            "precision_label": "bf16 (ran as fp32)",
            "threads": 16,
        },
        ("openvino", "bf16", "cpu"),
        "openvino bf16 (ran as fp32) 16 threads",
    ),
    (  # an INT8 graph on a 7-bit weight grid is another setup; 8 bits is the default one
        {"backend": "openvino", "precision": "int8", "device": "cpu", "int8_weight_bits": 7},
        ("openvino", "int8", "cpu", "w7"),
        "openvino int8 7-bit weights",
    ),
    (
        {"backend": "openvino", "precision": "int8", "device": "cpu", "int8_weight_bits": 8},
        ("openvino", "int8", "cpu"),
        "openvino int8",
    ),
    ({}, (None, None, None), "? ?"),
]


@pytest.mark.parametrize(("record", "key", "label"), RECORDS)
def test_key_and_label_of_a_backend_record(record, key, label):
    assert setup_key(record) == key
    assert setup_label(record) == label


def _record(backend: str, precision: str, device: str, gpu: str | None = None) -> dict:
    return {"backend": backend, "precision": precision, "device": device, "gpu": gpu}


@pytest.mark.parametrize(
    ("method", "record", "options", "stem"),
    [
        (
            "resnet56",
            _record("torch", "bf16", "cpu"),
            {"compile": True, "channels_last": True, "threads": 2},
            "resnet56-torch-compile-t2-bf16-cpu",
        ),
        (
            "triplet",
            _record("torch", "fp32", "cuda:0", "NVIDIA H200"),
            {"compile": False, "channels_last": False, "threads": None},
            "triplet-torch-nchw-fp32-nvidia-h200",
        ),
        (
            "clip[random-weights]",
            _record("onnxruntime", "fp32", "cpu"),
            {"ort_provider": None, "ort_opt_level": None, "threads": 2},
            "clip-random-weights-onnxruntime-t2-fp32-cpu",
        ),
        (
            "m",
            _record("onnxruntime", "fp16", "cuda", "Tesla T4"),
            {"ort_provider": "tensorrt", "ort_opt_level": "basic", "threads": None},
            "m-onnxruntime-tensorrt-opt-basic-fp16-tesla-t4",
        ),
        (
            "m",
            _record("onnxruntime", "fp32", "cpu"),
            {"ort_provider": "cpu", "ort_opt_level": None},
            "m-onnxruntime-fp32-cpu",
        ),
        # Options of another backend do not name a setup.
        (
            "ViT B/32",
            _record("trt", "fp16", "cuda:0", "NVIDIA H200 NVL"),
            {"compile": True, "channels_last": False, "ort_opt_level": "all"},
            "vit-b-32-trt-fp16-nvidia-h200-nvl",
        ),
        (
            "m",
            _record("openvino", "int8", "cpu"),
            {"threads": 8, "ort_opt_level": "all"},
            "m-openvino-t8-int8-cpu",
        ),
    ],
)
def test_file_name_stem_of_a_setup(method, record, options, stem):
    assert setup_stem(method, record, options) == stem
