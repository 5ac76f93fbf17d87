"""The CIFAR ResNet family of He et al. (2016), as the reference study used it.

BasicBlock stages of 16/32/64 channels with ``n`` blocks each (depth = 6n + 2: 20, 32, 56), and
the "option A" shortcut: when a block halves the resolution, the identity is subsampled and
zero-padded to the new channel count instead of going through a 1x1 convolution. torchvision only
ships the ImageNet ResNets (7x7 stem, max-pool, 1x1 projection shortcuts), which do not fit 32x32
inputs, so the network is written here.

The embedding is the global-average-pooled 64-d feature (``head="none"``: the study's network,
non-negative because of the last ReLU) or a linear map of it to ``embedding_dim``
(``head="linear"``). An optional projection head (``projection_dim``) is used by losses only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = (20, 32, 56)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.subsample = stride != 1
        self.pad = c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: identity, subsampled and zero-padded along channels when the shape changes."""
        if self.subsample:
            x = x[:, :, ::2, ::2]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet-{20,32,56}: normalized float NCHW images -> unnormalized embeddings."""

    def __init__(
        self,
        depth: int = 56,
        embedding_dim: int = 64,
        head: str = "none",
        projection_dim: int | None = None,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {DEPTHS}, got {depth}")
        if head not in ("none", "linear"):
            raise ValueError(f"head must be 'none' or 'linear', got {head!r}")
        if head == "none" and embedding_dim != 64:
            raise ValueError("head='none' gives the 64-d pooled feature; use head='linear'")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        c_in = 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(64, embedding_dim) if head == "linear" else nn.Identity()
        self.projection = (
            nn.Sequential(
                nn.Linear(embedding_dim, embedding_dim),
                nn.ReLU(inplace=True),
                nn.Linear(embedding_dim, projection_dim),
            )
            if projection_dim
            else None
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding (what similarity is measured on)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def project(self, emb: torch.Tensor) -> torch.Tensor:
        """What the loss sees: the projection of the embedding, or the embedding itself."""
        return self.projection(emb) if self.projection is not None else emb
