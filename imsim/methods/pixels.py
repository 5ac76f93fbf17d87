"""``pixels``: the raw-pixel baseline (area-downsampled, per-image standardized, L2-normalized)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from imsim.methods.base import Embedder, MethodSpec, check_images
from imsim.methods.registry import register


class PixelsModule(torch.nn.Module):
    """uint8 NHWC -> area-downsampled, per-image standardized, L2-normalized pixels."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        x = F.adaptive_avg_pool2d(x, self.size).flatten(1)
        x = x - x.mean(dim=1, keepdim=True)
        return F.normalize(x, dim=1, eps=1e-12)


class PixelsEmbedder(Embedder):
    """Pixels averaged down to ``size`` x ``size``; mean and scale removed per image, so cosine
    similarity compares the pattern rather than the overall brightness."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.module = PixelsModule(size).eval()
        self.spec = MethodSpec(
            name="pixels",
            embedding_dim=3 * size * size,
            input_size=size,
            normalization="per-image zero mean, unit L2 norm",
        )

    def embed(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(check_images(images))).numpy()

    def as_module(self) -> torch.nn.Module:
        return self.module

    def describe(self) -> dict:
        return {"spec": self.spec.to_dict(), "size": self.size}


@register("pixels", help="raw pixels, area-downsampled to 8x8 (baseline)")
def create(**_: object) -> PixelsEmbedder:
    return PixelsEmbedder()
