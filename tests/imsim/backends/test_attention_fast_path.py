"""nn.MultiheadAttention's fused inference path under CUDA autocast (torch backend, fp16/bf16).

The fast path is refused whenever ``torch.is_autocast_enabled()``, which reports CUDA autocast.
CUDA autocast's flag can be raised on any machine, so the refusal and its fix
(``attention_outside_autocast``) are checked here on CPU tensors.
"""

from __future__ import annotations

import pytest
import torch

from imsim.backends.torch_backend import attention_outside_autocast, cast_matmul_weights


@pytest.fixture
def cuda_autocast_flag():
    """CUDA autocast "on" as the backend's own autocast leaves it (no GPU needed for the flag)."""
    torch.set_autocast_enabled("cuda", True)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", False)


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts calls of the fused kernel the fast path runs."""
    calls = []
    real = torch._native_multi_head_attention

    def counting(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_native_multi_head_attention", counting)
    return calls


class Block(torch.nn.Module):
    """A pre-norm attention block as open_clip writes it (fp32 residual stream)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.ln = torch.nn.LayerNorm(32)
        self.attn = torch.nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        return x + self.attn(h, h, h, need_weights=False)[0]


def test_cuda_autocast_blocks_the_fast_path_and_the_fix_restores_it(
    cuda_autocast_flag, fused_calls
):
    x = torch.randn(3, 5, 32)
    # CPU tensors need CPU autocast for the unfused path's mixed dtypes; on a GPU the backend's
    # CUDA autocast plays both roles.
    cpu_autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    plain = Block().eval()
    cast_matmul_weights(plain, torch.bfloat16)
    with torch.inference_mode(), cpu_autocast:
        ref = plain(x)
    assert fused_calls == []  # refused: "autocast is enabled"

    fixed = Block().eval()
    cast_matmul_weights(fixed, torch.bfloat16)
    assert attention_outside_autocast(fixed, "cuda") == 1
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = fixed(x)
        assert torch.is_autocast_enabled("cuda")  # switched off only inside the attention
    assert fused_calls == [torch.bfloat16]  # the fused kernel ran, in the weights' precision
    assert out.dtype == torch.float32 and out.shape == x.shape
    # The same bf16 math in another order: close to the unfused path.
    torch.testing.assert_close(out, ref, rtol=0, atol=0.05)


def test_float_masks_follow_the_cast():
    mha = torch.nn.MultiheadAttention(16, 2, batch_first=True).eval()
    cast_matmul_weights(mha, torch.bfloat16)
    attention_outside_autocast(mha, "cuda")
    x = torch.randn(2, 4, 16)
    mask = torch.zeros(4, 4)  # a float mask in fp32, as callers build it
    with torch.inference_mode():
        out, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 16)
