"""``color-hist``: the color-histogram baseline (joint RGB histogram, Hellinger-normalized)."""

from __future__ import annotations

import numpy as np

from imsim.methods.base import Embedder, MethodSpec, check_images, l2_normalize
from imsim.methods.registry import register


def rgb_histograms(images: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalized joint RGB histograms, (N, bins**3) float32, one bincount for the whole batch."""
    n = len(images)
    q = (images.astype(np.int64) * bins) >> 8  # channel value -> bin index in [0, bins)
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]  # (N, H, W)
    idx = idx.reshape(n, -1) + (np.arange(n) * bins**3)[:, None]
    hist = np.bincount(idx.ravel(), minlength=n * bins**3).reshape(n, bins**3).astype(np.float32)
    return hist / hist.sum(axis=1, keepdims=True)


class ColorHistEmbedder(Embedder):
    """An 8x8x8 RGB histogram; the square root makes cosine similarity the Bhattacharyya
    coefficient between the two color distributions."""

    def __init__(self, bins: int = 8) -> None:
        self.bins = bins
        self.spec = MethodSpec(
            name="color-hist",
            embedding_dim=bins**3,
            normalization="histogram sums to 1, then square root (Hellinger)",
        )

    def embed(self, images: np.ndarray) -> np.ndarray:
        return l2_normalize(np.sqrt(rgb_histograms(check_images(images), self.bins)))

    def describe(self) -> dict:
        return {"spec": self.spec.to_dict(), "bins": self.bins}


@register("color-hist", help="8x8x8 RGB color histogram (baseline)")
def create() -> ColorHistEmbedder:
    return ColorHistEmbedder()
