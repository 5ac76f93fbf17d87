"""Methods whose network is trained by ``python -m train``, loaded from a checkpoint.

``triplet``, ``contrastive`` and ``autoencoder`` are each created as ``NAME:PATH`` with the
checkpoint ``PATH`` (``.safetensors`` or its ``.json``); the checkpoint's config says how to
rebuild the network and preprocess images, so no other flag is needed. Class scores use the mean
similarity over a class's support images, as in the study.
"""

from __future__ import annotations

from pathlib import Path

import torch

from imsim.checkpoints import checkpoint_paths, load_checkpoint, load_state
from imsim.errors import UserError
from imsim.methods.base import MethodSpec, NetworkEmbedder
from imsim.models import EmbeddingModule, Preprocess, build_network, embedding_dim

TRAINED_METHODS = ("triplet", "contrastive", "autoencoder")


def load_embedding_module(
    path: str | Path, method: str | None = None
) -> tuple[EmbeddingModule, dict]:
    """The checkpoint's network as uint8 NHWC -> L2-normalized embeddings, and its config."""
    tensors, cfg = load_checkpoint(path, method=method)
    weights, _ = checkpoint_paths(path)
    try:
        network = build_network(cfg["arch"])
        pre = cfg["preprocess"]
        preprocess = Preprocess(int(pre["input_size"]), tuple(pre["mean"]), tuple(pre["std"]))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(
            f"{weights}: its config has no usable arch/preprocess section ({e})"
        ) from None
    load_state(network, tensors, str(weights))
    return EmbeddingModule(network, preprocess).eval(), cfg


def arch_tag(arch: dict) -> str:
    """A short tag of a network description: ``r20`` (ResNet-20), ``vit-tiny``, ``autoencoder``."""
    name = str(arch.get("name", "net"))
    if name == "resnet_cifar" and arch.get("depth"):
        return f"r{arch['depth']}"
    if name == "vit_cifar":
        return f"vit-{arch.get('size') or arch.get('width', '')}".rstrip("-")
    return name.replace("_", "-")


def checkpoint_tag(weights: Path, arch: dict) -> str:
    """The checkpoint's folder name and its network's tag, ``cifar10-r20``; a family the folder
    name already ends with is not repeated (``cifar10-vit`` and ``vit-tiny``: ``cifar10-vit-tiny``).
    """
    folder = weights.resolve().parent.name or "checkpoint"
    tag = arch_tag(arch)
    head = tag.split("-")[0]
    if folder == head or folder.endswith("-" + head):
        folder = folder[: -len(head)].rstrip("-")
    return "-".join(p for p in (folder, tag) if p)


class TrainedEmbedder(NetworkEmbedder):
    """A network from a ``python -m train`` checkpoint, run by its runner (``NetworkEmbedder``)."""

    def __init__(
        self, name: str, path: str | Path, device: str = "cpu", batch_size: int = 256
    ) -> None:
        self.module, self.config = load_embedding_module(path, method=name)
        weights = checkpoint_paths(path)[0]
        self.path = str(weights)
        self.tag = checkpoint_tag(weights, self.config["arch"])
        try:
            self.module.to(torch.device(device))
        except (RuntimeError, AssertionError) as e:
            raise UserError(f"cannot use device {device!r} for {name}: {e}") from None
        self.device = device
        self.batch_size = batch_size
        self.spec = MethodSpec(
            name=name,
            embedding_dim=embedding_dim(self.config["arch"]),
            input_size=int(self.config["preprocess"]["input_size"]),
            normalization="RGB / 255, CIFAR mean/std, L2-normalized embedding",
            support_aggregation="mean",
        )

    @property
    def method_id(self) -> str:
        return f"{self.spec.name}.{self.tag}"

    def weights_sha256(self) -> str | None:
        return self.config.get("weights_sha256")

    def trained_classes(self) -> set[str]:
        split = self.config.get("split") or {}
        return set(split.get("train", [])) | set(split.get("validation", []))

    def describe(self) -> dict:
        keep = ("method", "arch", "recipe", "epoch", "validation", "data", "split", "seed")
        return {
            "spec": self.spec.to_dict(),
            "checkpoint": self.path,
            "weights_sha256": self.config.get("weights_sha256"),
            **{k: self.config.get(k) for k in keep},
        }


def create_trained(
    name: str, path: str | None, device: str = "cpu", batch_size: int = 256
) -> TrainedEmbedder:
    """A trained method from ``NAME:PATH``, or a one-line error saying how to make a checkpoint."""
    if not path:
        raise UserError(
            f"{name} needs a checkpoint: --methods {name}:PATH "
            f"(make one with python -m train --method {name} --out DIR)"
        )
    return TrainedEmbedder(name, path, device=str(device), batch_size=int(batch_size))
