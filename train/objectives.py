"""The loss of one batch under a recipe: pytorch-metric-learning losses with mining (default) or
the study's hand-written triplet and pair losses (seed), plus reconstruction for the autoencoder.

The seed losses are written out because they are the study's formulas (cosine triplet margin on
random triplets; y d^2 + (1 - y) relu(margin - d)^2 with d = 1 - cos on random pairs), which
pytorch-metric-learning's losses do not reproduce exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners

from train.batches import ImageBank
from train.recipes import Recipe


def seed_triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    """The study's triplet loss: relu(cos(a, n) - cos(a, p) + margin), averaged."""
    return F.relu(
        F.cosine_similarity(anchor, negative) - F.cosine_similarity(anchor, positive) + margin
    ).mean()


def seed_pair_loss(
    first: torch.Tensor, second: torch.Tensor, same: torch.Tensor, margin: float
) -> torch.Tensor:
    """The study's contrastive loss on d = 1 - cos: y d^2 + (1 - y) relu(margin - d)^2."""
    d = 1.0 - F.cosine_similarity(first, second)
    return (same * d**2 + (1 - same) * F.relu(margin - d) ** 2).mean()


class NTXent(torch.nn.Module):
    """SimCLR's NT-Xent loss for two views: ``emb`` is (2N, D), row i and row i + N are views of
    one image (the only positive), every other row a negative; cross-entropy over cosine / T.

    The value equals pytorch-metric-learning's ``NTXentLoss`` with instance labels (a test checks
    it), which computes it pair by pair with dense masks: about 2 s per 256-view batch on one CPU
    core, as long as the network's step; this is one (2N, 2N) matrix and one cross-entropy.
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        z = F.normalize(emb.float(), dim=1)
        n = len(z) // 2
        logits = z @ z.T / self.temperature
        logits.fill_diagonal_(float("-inf"))  # an image is not its own negative
        target = torch.arange(len(z), device=z.device).roll(n)
        return F.cross_entropy(logits, target)


class Objective:
    """Callable: (network, bank, batch) -> (loss, images processed)."""

    def __init__(self, recipe: Recipe, autocast: Callable[[], AbstractContextManager[Any]]) -> None:
        self.recipe = recipe
        self.autocast = autocast
        cfg = recipe.loss
        self.recon_weight = float(cfg.get("reconstruction_weight", 0.0))
        name = cfg["name"]
        self.metric: torch.nn.Module | None = None
        self.miner: torch.nn.Module | None = None
        cos = distances.CosineSimilarity()
        if name == "pml-triplet":
            self.metric = losses.TripletMarginLoss(margin=cfg["margin"], distance=cos)
        elif name == "pml-contrastive":
            self.metric = losses.ContrastiveLoss(
                pos_margin=cfg["pos_margin"], neg_margin=cfg["neg_margin"], distance=cos
            )
        elif name not in ("seed-triplet", "seed-contrastive"):
            raise ValueError(f"unknown loss {name!r}")
        ssl = cfg.get("ssl")
        self.ssl: torch.nn.Module | None = None
        self.ssl_weight = 0.0
        if ssl:
            if ssl["name"] != "ntxent":
                raise ValueError(f"unknown self-supervised loss {ssl['name']!r}")
            # SimCLR's instance discrimination: the two views of one image are the only
            # positives, every other image in the batch a negative.
            self.ssl = NTXent(temperature=ssl["temperature"])
            self.ssl_weight = float(ssl["weight"])
        miner = cfg.get("miner")
        if miner:
            if miner["name"] != "multi-similarity":
                raise ValueError(f"unknown miner {miner['name']!r}")
            self.miner = miners.MultiSimilarityMiner(epsilon=miner["epsilon"], distance=cos)

    def _forward(
        self, net: torch.nn.Module, x01: torch.Tensor, pre: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.autocast():
            emb = net(pre.normalize(x01))
            recon = net.decode(emb) if self.recon_weight else None
            out = net.project(emb)
        return out.float(), (recon.float() if recon is not None else None)

    def _recon(self, recon: torch.Tensor | None, x01: torch.Tensor) -> torch.Tensor:
        # Target = the image in [0, 1], which the decoder's Sigmoid can reach (the study's bug fix).
        return self.recon_weight * F.mse_loss(recon, x01) if recon is not None else 0.0

    def __call__(
        self, net: torch.nn.Module, bank: ImageBank, batch: tuple[np.ndarray, ...] | np.ndarray
    ) -> tuple[torch.Tensor, int]:
        pre = bank.preprocess
        kind = self.recipe.sampling
        if kind == "balanced":
            idx = batch
            labels = bank.label_tensor(idx)
            x01 = bank.unit(idx)
            if self.ssl is not None:  # a second view of every image, drawn on its own
                x01 = torch.cat([x01, bank.unit(idx)])
            emb, recon = self._forward(net, x01, pre)
            # The metric loss sees the first view only: mined triplets grow with the cube of the
            # batch, so both views would cost several times a step for little more signal.
            first = emb[: len(idx)]
            pairs = self.miner(first, labels) if self.miner is not None else None
            loss = self.metric(first, labels, pairs) + self._recon(recon, x01)
            if self.ssl is not None:
                loss = loss + self.ssl_weight * self.ssl(emb)
            return loss, len(x01)
        if kind == "triplets":
            a, p, n = (bank.unit(i) for i in batch)
            ea, ep, en = (self._forward(net, x, pre)[0] for x in (a, p, n))
            return seed_triplet_loss(ea, ep, en, self.recipe.loss["margin"]), 3 * len(batch[0])
        if kind == "pairs":
            i1, i2, same = batch
            x1, x2 = bank.unit(i1), bank.unit(i2)
            (e1, r1), (e2, r2) = self._forward(net, x1, pre), self._forward(net, x2, pre)
            y = torch.from_numpy(same.astype(np.float32)).to(bank.device)
            loss = seed_pair_loss(e1, e2, y, self.recipe.loss["margin"])
            loss = loss + self._recon(r1, x1) + self._recon(r2, x2)
            return loss, 2 * len(i1)
        raise ValueError(f"unknown sampling {kind!r}")
