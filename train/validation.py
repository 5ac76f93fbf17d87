"""Validation on held-out seen classes (used for model selection) and the unseen-class report.

Some seen classes are held out of training (by default 1 in 9: 10 of 90 on CIFAR-100 and shapes,
1 of 5 on CIFAR-10). Validation queries are their test-split images, retrieved among the test
images of all seen classes, and the score is mAP@R: it rewards an embedding that gathers a class
it was not trained on and keeps it apart from the trained ones, which is what the unseen classes
need. The unseen classes are embedded too, each epoch, but only to report the curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from imsim.data import Dataset, Split
from imsim.errors import UserError
from imsim.methods.base import Scorer
from imsim.protocols import episodes
from imsim.protocols.retrieval import retrieval_metrics

REPORT_EPISODES = 300


def default_val_count(n_seen: int) -> int:
    """How many seen classes to hold out for validation: about one in nine, at least one."""
    return max(1, round(n_seen / 9))


@dataclass(frozen=True)
class ClassPlan:
    """Which seen classes train the network and which validate it."""

    train: tuple[int, ...]
    val: tuple[int, ...]

    @staticmethod
    def make(seen: tuple[int, ...], n_val: int | None, seed: int = 0) -> ClassPlan:
        n_val = default_val_count(len(seen)) if n_val is None else n_val
        if len(seen) < 2 or not 1 <= n_val < len(seen):
            raise UserError(
                f"need at least one training and one validation class among the {len(seen)} seen "
                f"classes, asked to hold out {n_val}"
            )
        rng = np.random.default_rng([seed, 3])
        val = tuple(sorted(int(c) for c in rng.choice(np.asarray(seen), n_val, replace=False)))
        return ClassPlan(tuple(c for c in seen if c not in val), val)


@dataclass
class EvalSets:
    val_pool: Split  # test images of every seen class
    val_queries: np.ndarray  # positions in val_pool of the held-out classes' images
    unseen_pool: Split
    unseen: tuple[int, ...]

    @staticmethod
    def make(ds: Dataset, plan: ClassPlan) -> EvalSets:
        val_pool = ds.test.subset(ds.split.seen)
        queries = np.flatnonzero(np.isin(val_pool.labels, np.asarray(plan.val)))
        return EvalSets(val_pool, queries, ds.test.subset(ds.split.unseen), ds.split.unseen)


def embed(
    module: torch.nn.Module, images: np.ndarray, autocast: Any, batch: int = 500
) -> np.ndarray:
    module.eval()
    device = next(module.parameters()).device
    out = []
    with torch.inference_mode(), autocast:
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i : i + batch]).to(device)
            out.append(module(x).float().cpu().numpy())
    return np.concatenate(out)


def evaluate(
    module: torch.nn.Module, sets: EvalSets, autocast: Any, method: str
) -> dict[str, float]:
    """Validation score (for selection) and unseen-class report numbers for one model state."""
    feats = embed(module, sets.val_pool.images, autocast)
    q = sets.val_queries
    val = retrieval_metrics(feats[q] @ feats.T, sets.val_pool.labels, query_idx=q)
    ufeats = embed(module, sets.unseen_pool.images, autocast)
    ulabels = sets.unseen_pool.labels
    unseen_ret = retrieval_metrics(ufeats @ ufeats.T, ulabels)
    ep = episodes.evaluate(
        Scorer(ufeats, "mean"), ulabels, sets.unseen, method, episodes=REPORT_EPISODES, seed=0
    )[0]
    return {
        "val_map@r": val["map@r"],
        "val_recall@1": val["recall@1"],
        "unseen_episodes_top1": ep["value"],
        "unseen_episodes_ci95": ep["ci95"],
        "unseen_map@r": unseen_ret["map@r"],
    }
