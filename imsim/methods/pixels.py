"""``pixels``: the raw-pixel baseline (area-downsampled, per-image standardized, L2-normalized)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from imsim.methods.base import MethodSpec, NetworkEmbedder
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


class PixelsEmbedder(NetworkEmbedder):
    """Pixels averaged down to ``size`` x ``size``; mean and scale removed per image, so cosine
    similarity compares the pattern rather than the overall brightness. A network like the
    trained ones (``PixelsModule``), so it runs on any backend."""

    def __init__(self, size: int = 8, device: str = "cpu", batch_size: int = 256) -> None:
        self.size = size
        self.module = PixelsModule(size).eval()
        self.device = device
        self.batch_size = batch_size
        self.spec = MethodSpec(
            name="pixels",
            embedding_dim=3 * size * size,
            input_size=size,
            normalization="per-image zero mean, unit L2 norm",
        )

    def describe(self) -> dict:
        return {"spec": self.spec.to_dict(), "size": self.size}


@register("pixels", help="raw pixels, area-downsampled to 8x8 (baseline)")
def create(*, device: str = "cpu", batch_size: int = 256) -> PixelsEmbedder:
    return PixelsEmbedder(device=device, batch_size=int(batch_size))
