"""``pixels``: the raw-pixel baseline (area-downsampled, per-image standardized, L2-normalized)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from imsim.methods.base import Embedder, MethodSpec, check_images, l2_normalize
from imsim.methods.registry import register


class PixelsEmbedder(Embedder):
    """Pixels averaged down to ``size`` x ``size``; mean and scale removed per image, so cosine
    similarity compares the pattern rather than the overall brightness."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.spec = MethodSpec(
            name="pixels",
            embedding_dim=3 * size * size,
            input_size=size,
            normalization="per-image zero mean, unit L2 norm",
        )

    def embed(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(check_images(images)).permute(0, 3, 1, 2).float()
        x = F.adaptive_avg_pool2d(x, self.size).flatten(1).numpy()
        return l2_normalize(x - x.mean(axis=1, keepdims=True))

    def describe(self) -> dict:
        return {"spec": self.spec.to_dict(), "size": self.size}


@register("pixels", help="raw pixels, area-downsampled to 8x8 (baseline)")
def create(**_: object) -> PixelsEmbedder:
    return PixelsEmbedder()
