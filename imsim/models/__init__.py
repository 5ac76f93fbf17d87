"""Networks of the trained methods, and the wrapper that makes one a complete similarity method.

``build_network(arch)`` creates a network from the ``arch`` section of a checkpoint config, so a
checkpoint alone says how to rebuild its model. ``EmbeddingModule`` wraps a network with the
method's preprocessing and L2 normalization: uint8 NHWC in, unit-length float32 embeddings out,
which is the contract of ``Embedder.as_module`` that export and the inference backends rely on.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imsim.models.autoencoder import ConvAutoencoder
from imsim.models.resnet_cifar import ResNetCifar
from imsim.models.vit_cifar import ViTCifar

# The study's CIFAR normalization (kept for every recipe, so checkpoints share one preprocessing).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
INPUT_SIZE = 32


def build_network(arch: dict[str, Any]) -> nn.Module:
    """A network from its description, e.g. ``{"name": "resnet_cifar", "depth": 20, ...}`` or
    ``{"name": "vit_cifar", "width": 128, "depth": 4, ...}``."""
    kind = arch.get("name")
    if kind == "resnet_cifar":
        return ResNetCifar(
            depth=int(arch["depth"]),
            embedding_dim=int(arch["embedding_dim"]),
            head=str(arch["head"]),
            projection_dim=arch.get("projection_dim"),
        )
    if kind == "vit_cifar":
        return ViTCifar(
            width=int(arch["width"]),
            depth=int(arch["depth"]),
            heads=int(arch["heads"]),
            patch=int(arch["patch"]),
            embedding_dim=int(arch["embedding_dim"]),
        )
    if kind == "autoencoder":
        return ConvAutoencoder()
    raise ValueError(f"unknown architecture {kind!r}")


def embedding_dim(arch: dict[str, Any]) -> int:
    return 256 if arch.get("name") == "autoencoder" else int(arch["embedding_dim"])


class Preprocess(nn.Module):
    """uint8 NHWC RGB -> float NCHW at ``size`` x ``size``, normalized by ``mean``/``std``."""

    def __init__(
        self,
        size: int = INPUT_SIZE,
        mean: tuple[float, ...] = CIFAR_MEAN,
        std: tuple[float, ...] = CIFAR_STD,
    ) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> float NCHW in [0, 1] at the network's input size."""
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        return x

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.to_unit(images))


class EmbeddingModule(nn.Module):
    """The whole method: uint8 (N, H, W, 3) -> L2-normalized float32 (N, D)."""

    def __init__(self, network: nn.Module, preprocess: Preprocess | None = None) -> None:
        super().__init__()
        self.preprocess = preprocess or Preprocess()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.network(self.preprocess(images))
        return F.normalize(emb.float(), dim=1, eps=1e-12)


__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "INPUT_SIZE",
    "ConvAutoencoder",
    "EmbeddingModule",
    "Preprocess",
    "ResNetCifar",
    "ViTCifar",
    "build_network",
    "embedding_dim",
]
