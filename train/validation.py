"""Validation on held-out seen classes (used for model selection) and the unseen-class report.

Some seen classes are held out of training (by default 1 in 9: 10 of 90 on CIFAR-100 and shapes,
1 of 5 on CIFAR-10). Validation queries are their test-split images, retrieved among the test
images of all seen classes, and the score is mAP@R: it rewards an embedding that gathers a class
it was not trained on and keeps it apart from the trained ones, which is what the unseen classes
need. The unseen classes are embedded too, each epoch, but only to report the curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from imsim import protocols
from imsim.data import Dataset, Split
from imsim.errors import UserError
from imsim.methods.base import embed_all
from imsim.protocols import Episodes, Retrieval
from imsim.protocols.retrieval import retrieval_metrics
from imsim.scoring import CosineScorer

if TYPE_CHECKING:
    from imsim.backends.base import Backend

REPORT_EPISODES = 300
DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}
EMBED_BATCH = 500
# The unseen-class report: retrieval (mAP@R) and episodes, on 300 episodes to keep epochs short.
REPORT_PROTOCOLS = (Retrieval(), Episodes(episodes=REPORT_EPISODES, seed=0))


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


def runner_precision(autocast: Any) -> str:
    """The precision the training's ``autocast`` context computes in: fp16/bf16, else fp32."""
    if isinstance(autocast, torch.autocast) and autocast.fast_dtype in DTYPE_NAMES:
        return DTYPE_NAMES[autocast.fast_dtype]
    return "fp32"


def validation_runner(module: torch.nn.Module, autocast: Any) -> Backend:
    """The module as trained so far on the runner every method embeds with: a ``TorchBackend``
    (a copy of the module) on its device, in the precision of the training's ``autocast``."""
    from imsim.backends.torch_backend import TorchBackend

    module.eval()
    device = next(module.parameters()).device
    return TorchBackend(module, runner_precision(autocast), str(device), channels_last=False)


def evaluate(
    module: torch.nn.Module, sets: EvalSets, autocast: Any, method: str
) -> dict[str, float]:
    """Validation score (for selection) and unseen-class report numbers for one model state."""
    runner = validation_runner(module, autocast)
    feats = embed_all(runner, sets.val_pool.images, "validate", EMBED_BATCH)
    q = sets.val_queries
    val = retrieval_metrics(feats[q] @ feats.T, sets.val_pool.labels, query_idx=q)
    ufeats = embed_all(runner, sets.unseen_pool.images, "validate unseen", EMBED_BATCH)
    rows = protocols.evaluate(
        CosineScorer(ufeats), sets.unseen_pool.labels, sets.unseen, method, REPORT_PROTOCOLS
    )
    unseen = {(r["protocol"], r["metric"]): r for r in rows}
    ep = unseen[("episodes", "top1")]
    return {
        "val_map@r": val["map@r"],
        "val_recall@1": val["recall@1"],
        "unseen_episodes_top1": ep["value"],
        "unseen_episodes_ci95": ep["ci95"],
        "unseen_map@r": unseen[("retrieval", "map@r")]["value"],
    }
