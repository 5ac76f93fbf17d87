"""Methods whose network is trained by ``python -m train``, loaded from a checkpoint.

``triplet``, ``contrastive`` and ``autoencoder`` are each created as ``NAME:PATH`` with the
checkpoint ``PATH`` (``.safetensors`` or its ``.json``); the checkpoint's config says how to
rebuild the network and preprocess images, so no other flag is needed. Class scores use the mean
similarity over a class's support images, as in the study.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imsim.checkpoints import checkpoint_paths, load_checkpoint, load_state
from imsim.errors import UserError
from imsim.methods.base import Embedder, MethodSpec, check_images
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


class TrainedEmbedder(Embedder):
    """A network from a ``python -m train`` checkpoint."""

    def __init__(
        self, name: str, path: str | Path, device: str = "cpu", batch_size: int = 256
    ) -> None:
        self.module, self.config = load_embedding_module(path, method=name)
        self.path = str(checkpoint_paths(path)[0])
        try:
            self.device = torch.device(device)
            self.module.to(self.device)
        except (RuntimeError, AssertionError) as e:
            raise UserError(f"cannot use device {device!r} for {name}: {e}") from None
        self.batch_size = batch_size
        self.spec = MethodSpec(
            name=name,
            embedding_dim=embedding_dim(self.config["arch"]),
            input_size=int(self.config["preprocess"]["input_size"]),
            normalization="RGB / 255, CIFAR mean/std, L2-normalized embedding",
            support_aggregation="mean",
            needs_training=True,
        )

    def embed(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(check_images(images)).to(self.device)
        with torch.inference_mode():
            return self.module(x).cpu().numpy()

    def as_module(self) -> torch.nn.Module:
        return self.module

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
    name: str, path: str | None, device: object = "cpu", batch_size: object = 256
) -> TrainedEmbedder:
    if not path:
        raise UserError(
            f"{name} needs a checkpoint: --methods {name}:PATH "
            f"(make one with python -m train --method {name} --out DIR)"
        )
    return TrainedEmbedder(name, path, device=str(device), batch_size=int(batch_size))
