from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from imsim.models import Preprocess
from imsim.protocols.retrieval import retrieval_metrics
from train.batches import ImageBank, balanced_batches, draw_batches
from train.objectives import Objective, seed_pair_loss, seed_triplet_loss
from train.recipes import make_recipe


class TinyNet(nn.Module):
    """A few-thousand-parameter embedding network, small enough to overfit in seconds."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, dim),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def project(self, emb: torch.Tensor) -> torch.Tensor:
        return emb


def _perfect(n_classes: int = 4, per_class: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return torch.eye(8)[labels], labels  # each class on its own axis: cos 1 within, 0 across


@pytest.mark.parametrize("method", ["triplet", "contrastive"])
def test_default_loss_is_zero_for_a_perfect_embedding(method: str) -> None:
    obj = Objective(make_recipe(method), contextlib.nullcontext)
    emb, labels = _perfect()
    assert float(obj.metric(emb, labels, obj.miner(emb, labels))) == 0.0
    assert float(obj.metric(emb, labels)) == 0.0
    # ...and positive when two classes share an axis.
    bad = emb.clone()
    bad[labels == 1] = torch.eye(8)[0]
    assert float(obj.metric(bad, labels)) > 0.05


def test_seed_losses_are_zero_for_a_perfect_embedding(tiny) -> None:
    emb, _ = _perfect()
    a, p, n = emb[[0, 3, 6]], emb[[1, 4, 7]], emb[[3, 6, 0]]
    assert float(seed_triplet_loss(a, p, n, 0.3)) == 0.0
    assert float(seed_triplet_loss(a, n, p, 0.3)) == pytest.approx(1.3)  # positive = other class
    same = torch.tensor([1.0, 0.0, 1.0])
    assert float(seed_pair_loss(a, torch.stack([p[0], n[1], p[2]]), same, 1.0)) == 0.0
    assert float(seed_pair_loss(a, a, torch.zeros(3), 1.0)) == pytest.approx(1.0)
    # The study's sampling: positives share the anchor's class (another image), negatives do not.
    bank = ImageBank(tiny.train.images, tiny.train.labels, Preprocess(), "frozen-flip", 0)
    a, p, n = next(draw_batches(bank.labels, 64, 64, 0, 1, "triplets"))
    assert (bank.labels[a] == bank.labels[p]).all() and (bank.labels[a] != bank.labels[n]).all()
    assert not (a == p).any()


def _full_loss(obj: Objective, net: nn.Module, bank: ImageBank, recipe) -> float:
    """The loss over the whole tiny set (all pairs/triplets, or 256 fixed random draws)."""
    with torch.no_grad():
        x = bank.preprocess.normalize(bank.unit(np.arange(len(bank))))
        emb = net(x)
        labels = torch.from_numpy(bank.labels)
        if recipe.sampling == "balanced":
            return float(obj.metric(emb, labels))
        a, p, n = next(draw_batches(bank.labels, 256, 256, 99, 0, "triplets"))
        if recipe.sampling == "triplets":
            return float(seed_triplet_loss(emb[a], emb[p], emb[n], recipe.loss["margin"]))
        same = torch.arange(256) % 2 == 0
        second = torch.from_numpy(np.where(same.numpy(), p, n))
        return float(seed_pair_loss(emb[a], emb[second], same.float(), recipe.loss["margin"]))


def _fit(recipe_name: str, method: str, tiny, steps: int = 80) -> tuple[float, float, float]:
    torch.manual_seed(0)
    recipe = make_recipe(method, recipe_name, batch_size=48)
    train = tiny.train.subset(tuple(range(6)))
    bank = ImageBank(train.images, train.labels, Preprocess(), "frozen-flip", 0)
    net = TinyNet()
    obj = Objective(recipe, contextlib.nullcontext)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    before = _full_loss(obj, net, bank, recipe)
    for step in range(steps):
        if recipe.sampling == "balanced":
            batch = next(balanced_batches(bank.labels, 48, 48, 0, step))
        else:
            batch = next(draw_batches(bank.labels, 48, 48, 0, step, recipe.sampling))
        loss, _ = obj(net, bank, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _full_loss(obj, net, bank, recipe)
    with torch.no_grad():
        feats = net(bank.preprocess.normalize(bank.unit(np.arange(len(bank)))))
    feats = torch.nn.functional.normalize(feats, dim=1).numpy()
    return before, after, retrieval_metrics(feats @ feats.T, bank.labels)["recall@1"]


@pytest.mark.parametrize(
    ("recipe", "method"),
    [
        ("default", "triplet"),
        ("default", "contrastive"),
        ("seed", "triplet"),
        ("seed", "contrastive"),
    ],
)
def test_a_tiny_model_overfits_a_tiny_set(tiny, recipe: str, method: str) -> None:
    before, after, recall1 = _fit(recipe, method, tiny)
    assert after < 0.5 * before
    if recipe == "default":  # mined losses: every training image's nearest neighbour is its class
        assert recall1 == 1.0
