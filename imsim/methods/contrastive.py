"""``contrastive:PATH``: Siamese network, contrastive loss, from a checkpoint (see ``trained``)."""

from __future__ import annotations

from imsim.methods.registry import register
from imsim.methods.trained import TrainedEmbedder, create_trained


@register(
    "contrastive",
    in_all=False,
    help="Siamese network trained with a contrastive loss; contrastive:CHECKPOINT",
)
def create(
    path: str | None = None, *, device: str = "cpu", batch_size: int = 256
) -> TrainedEmbedder:
    return create_trained("contrastive", path, device, batch_size)
