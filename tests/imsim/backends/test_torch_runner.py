"""The torch runner: strict fp32 only while it runs, and the method's module left untouched."""

from __future__ import annotations

import numpy as np
import torch

from imsim.backends.torch_backend import TorchBackend, strict_fp32
from imsim.methods.pixels import PixelsModule
from imsim.models import EmbeddingModule, ResNetCifar


def test_strict_fp32_is_scoped():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        with strict_fp32():
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_reference_runs_the_module_itself_and_others_copy_it():
    torch.manual_seed(0)
    module = EmbeddingModule(ResNetCifar(depth=20, embedding_dim=8, head="linear")).eval()
    ref = TorchBackend(module, "fp32", channels_last=False)
    assert ref.module is module  # no second copy of the weights
    low = TorchBackend(module, "bf16", channels_last=True)
    assert low.module is not module
    assert next(module.parameters()).dtype == torch.float32  # the method's module unchanged
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    with torch.inference_mode():
        direct = module(torch.from_numpy(images)).numpy()
    np.testing.assert_array_equal(ref.embed(images), direct)
    pixels = TorchBackend(PixelsModule(8), "fp32", channels_last=False)
    assert pixels.embed(images).shape == (4, 192)
