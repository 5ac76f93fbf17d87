"""``triplet:PATH``: Siamese network, triplet loss, from a checkpoint (see ``trained``)."""

from __future__ import annotations

from imsim.methods.registry import register
from imsim.methods.trained import TrainedEmbedder, create_trained


@register(
    "triplet", in_all=False, help="Siamese network trained with a triplet loss; triplet:CHECKPOINT"
)
def create(
    path: str | None = None, *, device: str = "cpu", batch_size: int = 256
) -> TrainedEmbedder:
    return create_trained("triplet", path, device, batch_size)
