"""Training recipes: the reference study's (``seed``) and the improved ``default``.

A recipe fixes everything that defines a training run besides data, epochs and seed: network,
batch construction, loss, optimizer and schedule. It is recorded in every checkpoint.

``seed`` is the study's code as described in its PROTOCOL.md: ResNet-56 with the pooled 64-d
feature, random triplets or 50/50 pairs without mining, cosine triplet margin 0.3, contrastive
loss on d = 1 - cos with margin 1, autoencoder = contrastive + reconstruction of both images
(1:1:1), Adam 1e-3, batch 128, 50,000 samples per epoch, mean/std normalization and a horizontal
flip drawn once per image (a bug of the study, kept so its numbers can be reproduced). The
autoencoder's reconstruction target is fixed in both recipes (see ``imsim.models.autoencoder``).

``default`` uses pytorch-metric-learning: class-balanced batches (``MPerClassSampler``),
multi-similarity mining, a cosine triplet or contrastive loss on a linear 64-d embedding, random
crop + flip drawn fresh for every sample, AdamW with a one-cycle learning-rate schedule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from imsim.models.vit_cifar import VIT_SIZES

RECIPES = ("default", "seed")
METHODS = ("triplet", "contrastive", "autoencoder")


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str
    arch: dict[str, Any]
    batch_size: int
    sampling: str  # "balanced" (m per class), "triplets" or "pairs" (the study's random draws)
    samples_per_epoch: int | None  # None: one pass over the training images
    augment: str  # "crop+flip" or "simclr" (fresh per sample), "frozen-flip" (the study's)
    optimizer: str  # "adam" or "adamw"
    lr: float
    weight_decay: float
    schedule: str  # "none" or "onecycle"
    loss: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ARCHS = ("resnet", "vit-tiny")
AUGMENTS = ("crop+flip", "simclr")


def _arch(
    method: str, depth: int, embedding_dim: int, head: str, backbone: str = "resnet"
) -> dict[str, Any]:
    if method == "autoencoder":
        return {"name": "autoencoder"}
    if backbone.startswith("vit-"):
        size = backbone.removeprefix("vit-")
        return {
            "name": "vit_cifar",
            "size": size,
            **VIT_SIZES[size],
            "embedding_dim": embedding_dim,
        }
    return {"name": "resnet_cifar", "depth": depth, "embedding_dim": embedding_dim, "head": head}


def make_recipe(
    method: str,
    name: str = "default",
    *,
    depth: int | None = None,
    embedding_dim: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    samples_per_epoch: int | None = None,
    arch: str = "resnet",
    augment: str | None = None,
    ssl_weight: float | None = None,
    projection_dim: int | None = None,
) -> Recipe:
    """The named recipe for ``method``; keyword arguments override single fields.

    ``arch``: ``resnet`` (the CIFAR ResNet, ``depth``) or ``vit-tiny`` (``imsim.models.vit_cifar``,
    default recipe only: a transformer trained from scratch, with AdamW at a lower peak rate).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    if arch != "resnet" and (method == "autoencoder" or name == "seed"):
        raise ValueError(
            f"--arch {arch} is for the triplet and contrastive methods with the default recipe "
            "(the seed recipe is the study's ResNet, the autoencoder its own network)"
        )
    if arch != "resnet" and depth is not None:
        raise ValueError("--depth sets the ResNet's depth; the ViT's size is in --arch")
    if name == "seed" and (augment or ssl_weight or projection_dim):
        raise ValueError(
            "--augment, --ssl-weight and --projection-dim change the default recipe; the seed "
            "recipe is the study's as written"
        )
    if projection_dim is not None and (arch != "resnet" or method == "autoencoder"):
        raise ValueError("--projection-dim is for the ResNet of triplet and contrastive")
    if augment is not None and augment not in AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r}; choose from {AUGMENTS}")
    if ssl_weight is not None and not (ssl_weight >= 0 and ssl_weight < float("inf")):
        raise ValueError(f"--ssl-weight must be a finite number >= 0, got {ssl_weight}")
    if name == "seed":
        if method == "triplet":
            loss = {"name": "seed-triplet", "margin": 0.3}
        elif method == "contrastive":
            loss = {"name": "seed-contrastive", "margin": 1.0}
        else:
            loss = {"name": "seed-contrastive", "margin": 1.0, "reconstruction_weight": 1.0}
        r = Recipe(
            name="seed",
            method=method,
            arch=_arch(method, depth or 56, 64, "none"),
            batch_size=128,
            sampling="triplets" if method == "triplet" else "pairs",
            samples_per_epoch=50_000,
            augment="frozen-flip",
            optimizer="adam",
            lr=1e-3,
            weight_decay=0.0,
            schedule="none",
            loss=loss,
        )
    elif name == "default":
        miner = {"name": "multi-similarity", "epsilon": 0.1}
        if method == "triplet":
            loss = {"name": "pml-triplet", "margin": 0.2, "miner": miner}
        elif method == "contrastive":
            loss = {"name": "pml-contrastive", "pos_margin": 1.0, "neg_margin": 0.3, "miner": miner}
        else:
            loss = {
                "name": "pml-contrastive",
                "pos_margin": 1.0,
                "neg_margin": 0.3,
                "miner": miner,
                "reconstruction_weight": 1.0,
            }
        r = Recipe(
            name="default",
            method=method,
            arch=_arch(method, depth or 56, embedding_dim or 64, "linear", arch),
            batch_size=128,
            sampling="balanced",
            samples_per_epoch=None,
            augment="crop+flip",
            optimizer="adamw",
            lr=2e-3 if arch == "resnet" else 1e-3,
            weight_decay=5e-2,
            schedule="onecycle",
            loss=loss,
        )
    else:
        raise ValueError(f"unknown recipe {name!r}; choose from {RECIPES}")
    if embedding_dim is not None and name == "seed" and method != "autoencoder":
        r = replace(r, arch={**r.arch, "head": "linear", "embedding_dim": embedding_dim})
    if ssl_weight is not None:
        loss = {k: v for k, v in r.loss.items() if k != "ssl"}
        if ssl_weight > 0:
            loss["ssl"] = {"name": "ntxent", "temperature": 0.2, "weight": ssl_weight}
        r = replace(r, loss=loss)
    if projection_dim is not None and method != "autoencoder":
        r = replace(r, arch={**r.arch, "projection_dim": projection_dim})
    return replace(
        r,
        augment=augment or r.augment,
        batch_size=batch_size or r.batch_size,
        lr=lr or r.lr,
        samples_per_epoch=samples_per_epoch or r.samples_per_epoch,
    )
