"""``trt``: a serialized TensorRT engine (10.x or 11.x), run from torch-owned CUDA buffers.

No pycuda: torch allocates the device buffers and owns the one CUDA stream the engine runs on.
``prepare`` copies the images to the GPU; ``run_prepared`` binds them as the engine's input, sets
the real input shape (``set_input_shape``), runs ``execute_async_v3`` on the stream and copies the
output (allocated once for the profile's maximum batch) sliced to the real batch. Batches above
the profile's maximum run in chunks. The engine's manifest is checked first (see
``engine_manifest``).

- Device: the runtime, the engine, its execution context, the stream and the buffers are all
  made, and the engine runs, with ``--device`` current. "Each ICudaEngine object is bound to a
  specific GPU when it is instantiated [...] Each IExecutionContext is bound to the same GPU as
  the engine from which it was created. When calling execute() or enqueue(), ensure that the
  thread is associated with the correct device" (TensorRT developer guide, FAQ "How do I use
  TensorRT on multiple GPUs?").
- Alignment: ``IExecutionContext::setTensorAddress`` requires at least 256-byte aligned
  addresses (TensorRT C++ API reference). A chunk of a larger batch starts at
  ``i * max_batch * h * w * 3`` bytes, which need not be a multiple of 256 (max batch 10 at
  40x40: 48,000 bytes); such a chunk is copied into a preallocated input buffer instead of being
  bound in place (``input_binding``). Every ``set_tensor_address`` result is checked.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from imsim.artifacts import onnx_path
from imsim.backends.base import Backend, BackendOptions, checked_export
from imsim.backends.engine_manifest import (
    ENGINE_PRECISIONS,
    check_manifest,
    engine_path,
    load_manifest,
)
from imsim.backends.torch_backend import require_device
from imsim.errors import UserError
from imsim.methods.base import Embedder

NO_TENSORRT = (
    "TensorRT is not installed here; the trt backend and engines.build need TensorRT 10 or 11 "
    "and an NVIDIA GPU (pip install 'imsim[trt]' for torch built for CUDA 13, 'imsim[trt-cu12]' "
    "for CUDA 12, with NVIDIA's package index reachable)"
)


def tensorrt_wheels(torch_cuda: str | None) -> dict[str, str]:
    """The TensorRT distributions installed here (``tensorrt-cu12``/``-cu13``, their versions),
    and the one that matches ``torch_cuda`` (``torch.version.cuda``) under the key ``wanted``."""
    from imsim.files import package_versions

    found = package_versions(f"tensorrt-cu{major}" for major in (11, 12, 13))
    if torch_cuda:
        found["wanted"] = f"tensorrt-cu{torch_cuda.split('.')[0]}"
    return found


def require_tensorrt() -> ModuleType:
    """The ``tensorrt`` module (10.x or newer), or a one-line error saying it is missing."""
    try:
        import tensorrt
    except (ImportError, OSError):
        raise UserError(NO_TENSORRT) from None
    if trt_major(tensorrt.__version__) < 10:
        raise UserError(f"TensorRT {tensorrt.__version__} is too old; install TensorRT 10 or 11")
    return tensorrt


def trt_major(version: str) -> int:
    return trt_version(version)[0]


def trt_version(version: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string such as ``10.12.0.36``."""
    try:
        parts = [int(p) for p in version.split(".")[:2]]
    except ValueError:
        raise UserError(f"cannot read the TensorRT version {version!r}") from None
    return parts[0], parts[1] if len(parts) > 1 else 0


TENSOR_ALIGNMENT = 256  # bytes; IExecutionContext::setTensorAddress's minimum


def input_binding(address: int, alignment: int = TENSOR_ALIGNMENT) -> str:
    """How a device input at ``address`` is given to the engine: ``in place`` when aligned as
    TensorRT requires, else ``copy`` (into the backend's preallocated, aligned input buffer)."""
    return "in place" if address % alignment == 0 else "copy"


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """(name, "major.minor" compute capability) of a CUDA device."""
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def require_cuda(device: str) -> torch.device:
    dev = require_device(device if device != "cpu" else "cuda")
    if dev.type != "cuda":
        raise UserError("TensorRT runs on a CUDA GPU; use --device cuda")
    return dev


class TensorRTBackend(Backend):
    name = "trt"
    precisions = ENGINE_PRECISIONS
    default_precision = "fp16"  # engines.build's default: the engine make engines builds

    def __init__(self, engine: str | Path, onnx_dir: str | Path, device: str = "cuda") -> None:
        trt = require_tensorrt()
        dev = require_cuda(device)
        self.engine_file = Path(engine)
        self.manifest = load_manifest(self.engine_file, onnx_dir)
        gpu, cc = gpu_identity(dev)
        check_manifest(
            self.manifest,
            engine=self.engine_file,
            onnx_dir=onnx_dir,
            tensorrt_version=trt.__version__,
            gpu_name=gpu,
            compute_capability=cc,
        )
        super().__init__(self.manifest["precision"], str(dev))
        self.torch_device = dev
        self.gpu = gpu
        self.logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(dev):  # everything below is bound to this device (module doc)
            self.runtime = trt.Runtime(self.logger)
            self._load(trt, dev)

    def _load(self, trt: ModuleType, dev: torch.device) -> None:
        """Deserialize the engine, make its context and the buffers (``dev`` is current)."""
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_file.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not load {self.engine_file}; rebuild it")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise UserError(
                f"TensorRT could not create an execution context for {self.engine_file}"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{self.engine_file} must have one input and one output, has {names}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        if self.engine.get_tensor_dtype(self.input_name) != trt.DataType.UINT8:
            raise UserError(f"{self.engine_file} does not take uint8 images; rebuild it")
        out_dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        out_dtype = out_dtypes.get(self.engine.get_tensor_dtype(self.output_name))
        if out_dtype is None:
            raise UserError(f"{self.engine_file} has an unexpected output type; rebuild it")
        _, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.max_batch = int(max_shape[0])
        self.input_size = (int(max_shape[1]), int(max_shape[2]))
        dim = int(self.engine.get_tensor_shape(self.output_name)[1])
        self.stream = torch.cuda.Stream(device=dev)
        # torch's CUDA allocator hands out blocks aligned far beyond 256 bytes.
        self.out_buf = torch.empty((self.max_batch, dim), dtype=out_dtype, device=dev)
        h, w = self.input_size
        self.in_buf = torch.empty((self.max_batch, h, w, 3), dtype=torch.uint8, device=dev)
        self._set_address(self.output_name, self.out_buf)

    def _set_address(self, name: str, tensor: torch.Tensor) -> None:
        if not self.context.set_tensor_address(name, tensor.data_ptr()):
            raise RuntimeError(f"TensorRT refused the address of {name!r} ({tensor.data_ptr():#x})")

    def bind_input(self, chunk: torch.Tensor) -> str:
        """Bind a contiguous chunk (at most the maximum batch) as the engine's input: in place
        when its address is aligned, else through the input buffer. Returns which."""
        how = input_binding(chunk.data_ptr())
        if how == "copy":
            buf = self.in_buf[: len(chunk)]
            buf.copy_(chunk, non_blocking=True)  # queued on the current (engine's) stream
            chunk = buf
        self._set_address(self.input_name, chunk)
        return how

    @classmethod
    def from_embedder(cls, embedder: Embedder, options: BackendOptions) -> TensorRTBackend:
        require_tensorrt()
        own = cls.checked_options(options)
        engine = engine_path(own.engine_dir, embedder.spec.name, own.precision)
        manifest = load_manifest(engine, own.onnx_dir)
        # The engine's source ONNX must come from this method's weights (the manifest ties the
        # engine to the ONNX bytes, the ONNX sidecar ties those to the weights).
        src = Path(own.onnx_dir) / manifest["onnx"]["file"]
        if src.name not in {
            onnx_path(own.onnx_dir, embedder.spec.name, p).name for p in ("fp32", "fp16", "int8")
        }:
            raise UserError(f"{engine} was built from {src.name}, not an export of this method")
        checked_export(embedder, cls.name, src)
        return cls(engine, own.onnx_dir, own.device)

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        with torch.cuda.device(self.torch_device), torch.cuda.stream(self.stream):
            x = torch.from_numpy(images).to(self.torch_device, non_blocking=False)
        self.stream.synchronize()
        return x

    def run_prepared(self, x: torch.Tensor) -> torch.Tensor:
        """Run the engine on device images, in chunks of at most the profile's maximum batch.

        Each chunk is read in place where aligned, else copied into the input buffer
        (``bind_input``); the output is copied out of the engine's buffer before the next chunk
        overwrites it.
        """
        h, w = self.input_size
        out = []
        with torch.cuda.device(self.torch_device), torch.cuda.stream(self.stream):
            x = x.contiguous()  # a no-op for prepare's output; else a copy on this stream
            for i in range(0, len(x), self.max_batch):
                chunk = x[i : i + self.max_batch]
                b = len(chunk)
                self.bind_input(chunk)
                if not self.context.set_input_shape(self.input_name, (b, h, w, 3)):
                    raise RuntimeError(f"TensorRT refused input shape {(b, h, w, 3)}")
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError("TensorRT execution failed")
                # A copy (also for a float32 output), queued on the same stream.
                out.append(self.out_buf[:b].to(torch.float32, copy=True))
        return out[0] if len(out) == 1 else torch.cat(out)

    def fetch(self, y: torch.Tensor) -> np.ndarray:
        with torch.cuda.device(self.torch_device), torch.cuda.stream(self.stream):
            res = y.cpu()  # waits for the stream
        return res.numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            engine=str(self.engine_file),
            tensorrt_version=self.manifest["tensorrt_version"],
            gpu=self.gpu,
            profile=self.manifest["profile"],
            onnx=self.manifest["onnx"],
        )
        return d
