"""``contrastive:PATH``: Siamese network, contrastive loss, from a checkpoint (see ``trained``)."""

from __future__ import annotations

from imsim.methods.registry import register
from imsim.methods.trained import TrainedEmbedder, create_trained


@register(
    "contrastive",
    in_all=False,
    help="Siamese network trained with a contrastive loss; contrastive:CHECKPOINT",
)
def create(path: str | None = None, **options: object) -> TrainedEmbedder:
    return create_trained(
        "contrastive", path, options.get("device", "cpu"), options.get("batch_size", 256)
    )
