"""The reference study's convolutional autoencoder, with its reconstruction bug fixed.

Encoder Conv(3->16, k3, s2) - ReLU - Conv(16->32, k3, s2) - ReLU - Conv(32->64, k7) turns a 32x32
image into a 64x2x2 = 256-d latent, the embedding; the decoder mirrors it with transposed
convolutions and ends in a Sigmoid. The study compared that Sigmoid output, which lies in [0, 1],
with the mean/std-normalized input, which does not, so reconstruction could never fit; here the
target is the image in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

LATENT_DIM = 256


class ConvAutoencoder(nn.Module):
    """Normalized float NCHW 32x32 images -> 256-d latent (``forward``) and back (``decode``)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 7),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 7),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(16, 3, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The latent, flattened: the embedding."""
        return torch.flatten(self.encoder(x), 1)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (N, 256) -> reconstruction (N, 3, 32, 32) in [0, 1]."""
        return self.decoder(latent.reshape(-1, 64, 2, 2))

    def project(self, emb: torch.Tensor) -> torch.Tensor:
        return emb
