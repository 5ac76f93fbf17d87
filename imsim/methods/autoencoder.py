"""``autoencoder:PATH``: convolutional autoencoder latent, from a checkpoint (see ``trained``)."""

from __future__ import annotations

from imsim.methods.registry import register
from imsim.methods.trained import TrainedEmbedder, create_trained


@register(
    "autoencoder",
    in_all=False,
    help="convolutional autoencoder latent (contrastive + reconstruction); autoencoder:CHECKPOINT",
)
def create(
    path: str | None = None, *, device: str = "cpu", batch_size: int = 256
) -> TrainedEmbedder:
    return create_trained("autoencoder", path, device, batch_size)
