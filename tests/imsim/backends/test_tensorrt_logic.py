"""The TensorRT backend's decisions that need no GPU: version parsing, and how an input chunk is
bound (in place when 256-byte aligned, else through the input buffer), with every address the
engine refuses turned into an error."""

from __future__ import annotations

import pytest
import torch

from imsim.backends.tensorrt_backend import (
    TENSOR_ALIGNMENT,
    TensorRTBackend,
    input_binding,
    tensorrt_wheels,
    trt_version,
)
from imsim.errors import UserError


def test_versions():
    assert trt_version("10.12.0.36") == (10, 12)
    assert trt_version("11.4.0.106") == (11, 4)
    assert trt_version("10") == (10, 0)
    with pytest.raises(UserError, match="cannot read the TensorRT version"):
        trt_version("ten")


def test_alignment_decision():
    assert TENSOR_ALIGNMENT == 256
    base = 0x7F00_0000_0000  # torch's allocator returns blocks aligned far beyond 256 bytes
    assert input_binding(base) == "in place"
    # Max batch 10 at 40x40 (uint8 NHWC): the second chunk starts 48,000 bytes in.
    assert 10 * 40 * 40 * 3 == 48_000
    assert input_binding(base + 48_000) == "copy"
    # Max batch 256 at 32x32: 786,432 bytes = 3,072 x 256, aligned.
    assert input_binding(base + 256 * 32 * 32 * 3) == "in place"


class FakeContext:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.bound: dict[str, int] = {}

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.bound[name] = address
        return not self.refuse


def _aligned_batch(n: int, h: int, w: int) -> torch.Tensor:
    """A uint8 (n, h, w, 3) tensor whose first byte is 256-byte aligned."""
    size = n * h * w * 3
    raw = torch.empty(size + TENSOR_ALIGNMENT, dtype=torch.uint8)
    off = -raw.data_ptr() % TENSOR_ALIGNMENT
    x = raw[off : off + size].view(n, h, w, 3)
    x.copy_(torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8))
    return x


def _backend(max_batch: int, h: int, w: int, context: FakeContext) -> TensorRTBackend:
    """The backend's binding state only (no engine, no GPU): CPU tensors stand in for buffers."""
    b = TensorRTBackend.__new__(TensorRTBackend)
    b.context = context
    b.input_name = "images"
    b.in_buf = _aligned_batch(max_batch, h, w)
    return b


def test_unaligned_chunks_go_through_the_input_buffer():
    ctx = FakeContext()
    backend = _backend(10, 40, 40, ctx)
    x = _aligned_batch(17, 40, 40)
    first, second = x[:10], x[10:]
    assert backend.bind_input(first) == "in place"
    assert ctx.bound["images"] == first.data_ptr()
    assert backend.bind_input(second) == "copy"
    assert ctx.bound["images"] == backend.in_buf.data_ptr()
    assert ctx.bound["images"] % TENSOR_ALIGNMENT == 0
    assert torch.equal(backend.in_buf[:7], second)  # the engine reads the same pixels


def test_a_refused_address_is_an_error():
    backend = _backend(4, 8, 8, FakeContext(refuse=True))
    with pytest.raises(RuntimeError, match="TensorRT refused the address of 'images'"):
        backend.bind_input(_aligned_batch(4, 8, 8))


def test_the_trt_extra_installs_the_build_for_torchs_cuda():
    """pip install 'imsim[trt]' must bring the TensorRT built for the CUDA major of PyPI's torch
    wheel (CUDA 13), and nothing unused (cuda-python: torch owns buffers and streams)."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads(Path("pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [d.split(">")[0] for d in extras["trt"]] == ["tensorrt-cu13"]
    assert [d.split(">")[0] for d in extras["trt-cu12"]] == ["tensorrt-cu12"]
    assert not any("cuda-python" in d for d in extras["trt"] + extras["trt-cu12"])
    if torch.version.cuda and torch.version.cuda.startswith("13"):
        assert tensorrt_wheels(torch.version.cuda)["wanted"] == "tensorrt-cu13"


def test_installed_tensorrt_wheels_are_listed(monkeypatch):
    from importlib import metadata

    def version(name: str) -> str:
        if name == "tensorrt-cu12":
            return "10.9.0.34"
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", version)
    assert tensorrt_wheels("13.0") == {"tensorrt-cu12": "10.9.0.34", "wanted": "tensorrt-cu13"}
    assert tensorrt_wheels(None) == {"tensorrt-cu12": "10.9.0.34"}


def test_int8_engines_are_a_precision_of_their_own(tmp_path):
    from imsim.backends.engine_manifest import engine_path, rebuild_command

    assert TensorRTBackend.precisions == ("fp16", "fp32", "int8")
    engine = engine_path(tmp_path, "triplet", "int8")
    assert engine == tmp_path / "triplet.int8.engine"
    assert "--precision int8" in rebuild_command("triplet", "int8", engine, "onnx")
    with pytest.raises(UserError, match="runs fp16, fp32 or int8, not 'int4'"):
        TensorRTBackend.check_precision("int4")
