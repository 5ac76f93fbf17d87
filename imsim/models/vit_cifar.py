"""A small Vision Transformer for 32x32 images: the trained methods' transformer backbone.

LayerNorm, softmax, GELU and attention are where FP16 and INT8 inference go wrong, and CLIP, the
only other transformer here, has no real weights offline. This network is trained from scratch
with the same metric-learning objectives as the CIFAR ResNet (``--arch vit-tiny``), so parity and
speed of reduced precisions can be judged on a trained transformer.

Built from PyTorch's own layers (``nn.TransformerEncoderLayer``: pre-norm, GELU, batch-first), so
inference takes PyTorch's fused attention path and export gives standard ONNX ops
(LayerNormalization, MatMul, Softmax, Erf). Patches of 4x4 pixels give 64 tokens plus a class
token; the class token's final state, layer-normed, goes through a linear head to the embedding.
"""

from __future__ import annotations

import torch
from torch import nn

# Named sizes (``arch["size"]``); "tiny" trains on 2 CPU cores in minutes per epoch.
VIT_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"width": 128, "depth": 4, "heads": 4, "patch": 4},
}


class ViTCifar(nn.Module):
    """Normalized float (N, 3, 32, 32) -> (N, embedding_dim)."""

    def __init__(
        self,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        patch: int = 4,
        embedding_dim: int = 64,
        image_size: int = 32,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"patch {patch} does not divide the image size {image_size}")
        if width % heads:
            raise ValueError(f"{heads} heads do not divide the width {width}")
        tokens = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, width))
        layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=heads,
            dim_feedforward=mlp_ratio * width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, embedding_dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, tokens, width)
        # t.shape[0], not len(t): ONNX tracing records a tensor's shape but turns len() into a
        # constant, which fixed the exported graph's batch size to the trace's.
        cls = self.cls_token.expand(t.shape[0], -1, -1).to(t.dtype)
        t = torch.cat([cls, t], dim=1) + self.pos_embed.to(t.dtype)
        t = self.encoder(t)
        return self.head(self.norm(t[:, 0]))

    def project(self, emb: torch.Tensor) -> torch.Tensor:
        """What the loss sees: the embedding itself (no projection head)."""
        return emb
