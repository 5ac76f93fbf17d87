"""Small but realistic networks registered as methods, for export, backend and parity tests.

Both follow the ``Embedder.as_module`` contract (uint8 NHWC in, L2-normalized float32 out,
preprocessing inside): ``test-convnet`` resizes, normalizes and runs conv/BN/ReLU layers;
``test-vit`` is a one-block vision transformer (patch embedding, class token, LayerNorm,
multi-head attention with softmax, GELU MLP), so the FP16 block list is exercised. A factory
argument (``test-convnet:PATH``) loads weights from a safetensors checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from imsim.methods import registry
from imsim.methods.base import MethodSpec, NetworkEmbedder

MEAN = (0.481, 0.458, 0.408)
STD = (0.269, 0.261, 0.276)


class Preprocess(nn.Module):
    """uint8 NHWC -> resized, mean/std-normalized float NCHW."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class ConvNet(nn.Module):
    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.pre = Preprocess(40)
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(64, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.body(self.pre(images))), dim=1)


class TinyViT(nn.Module):
    def __init__(self, width: int = 64, dim: int = 48, size: int = 32, patch: int = 8) -> None:
        super().__init__()
        self.pre = Preprocess(size)
        self.patch = nn.Conv2d(3, width, patch, patch)
        n = (size // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, width) * 0.02)
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 4, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(self.pre(images)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.ln2(x))
        return F.normalize(self.proj(self.ln_post(x[:, 0])), dim=1)


NETS = {"test-convnet": ConvNet, "test-vit": TinyViT}


def make_module(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    module = NETS[name]()
    for m in module.modules():  # realistic (non-identity) batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


class NetEmbedder(NetworkEmbedder):
    """A method that is one network: ``embed`` runs its module on its runner (default: the
    reference, torch fp32)."""

    def __init__(self, name: str, module: nn.Module, checkpoint: str | None = None) -> None:
        self.module = module.eval()
        self.checkpoint = checkpoint
        with torch.no_grad():
            dim = module(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)).shape[1]
        self.spec = MethodSpec(name=name, embedding_dim=int(dim), input_size=32)

    def describe(self) -> dict:
        return {"spec": self.spec.to_dict(), "checkpoint": self.checkpoint}


def create(name: str, checkpoint: str | None = None) -> NetEmbedder:
    module = make_module(name)
    if checkpoint:
        module.load_state_dict(load_file(checkpoint))
    return NetEmbedder(name, module, checkpoint)


def save_checkpoint(module: nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def perturb(module: nn.Module, scale: float, seed: int = 1) -> nn.Module:
    """A copy with Gaussian noise of ``scale`` times each tensor's std added to every weight."""
    import copy

    out = copy.deepcopy(module)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * (p.std() if p.numel() > 1 else 1))
    return out


def register(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``test-convnet`` and ``test-vit`` for the duration of one test."""
    registry.list_methods()  # load the real methods first
    for name in NETS:

        def factory(arg: str | None = None, _name: str = name, **_: object) -> NetEmbedder:
            return create(_name, arg)

        entry = registry.Entry(name, factory, in_all=False, help="test network")
        monkeypatch.setitem(registry._REGISTRY, name, entry)


def images(n: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


if __name__ == "__main__":
    # python -m tests.nets {export|parity} ARGS: the real commands with the test networks
    # registered, to measure export and parity on them from the command line.
    import sys

    from imsim.cli import run

    commands = {"export": "export.__main__", "parity": "bench.parity"}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python -m tests.nets {{{','.join(commands)}}} ARGS")
    register(pytest.MonkeyPatch())
    cli = __import__(commands[sys.argv[1]], fromlist=["main"])
    run(cli.main, sys.argv[2:])
