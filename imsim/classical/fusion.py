"""Fusing the classical components: normalize each score, weight them, fit on seen classes only.

The study adds an unnormalized SIFT distance (hundreds to thousands) to a histogram correlation
and an SSIM in [-1, 1], so the distance decides almost alone. Here every component is first
standardized with the mean and standard deviation of its scores over pairs of seen-class
images, then the standardized scores are combined with non-negative weights summing to 1. The
weights are chosen on seen classes only: on a grid over the simplex, the one with the best mean
top-1 accuracy over few-shot episodes drawn from seen-class training images (the same episode
protocol the evaluation uses on unseen classes).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from imsim.protocols import Episodes, evaluate
from imsim.scoring import MatrixScorer


@dataclass(frozen=True)
class Fusion:
    """Per-component standardization and weights; ``combine`` gives the fused similarity."""

    components: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]

    def combine(self, sims: dict[str, np.ndarray]) -> np.ndarray:
        out = None
        for name, mu, sd, w in zip(self.components, self.mean, self.std, self.weights, strict=True):
            term = w * (sims[name] - mu) / sd
            out = term if out is None else out + term
        return out

    def to_dict(self) -> dict:
        return {
            "components": list(self.components),
            "mean": list(self.mean),
            "std": list(self.std),
            "weights": list(self.weights),
        }


def standardization(sims: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the off-diagonal entries (pairs of distinct images)."""
    off = sims[~np.eye(len(sims), dtype=bool)]
    off = off[np.isfinite(off)]
    if off.size == 0:
        return 0.0, 1.0
    sd = float(off.std())
    return float(off.mean()), sd if sd > 0 else 1.0


def simplex_grid(k: int, step: float) -> list[tuple[float, ...]]:
    """All weight vectors of ``k`` non-negative multiples of ``step`` that sum to 1."""
    n = round(1 / step)
    return [
        tuple(c / n for c in combo)
        for combo in itertools.product(range(n + 1), repeat=k)
        if sum(combo) == n
    ]


def fit_fusion(
    sims: dict[str, np.ndarray],
    labels: np.ndarray,
    step: float = 0.1,
    ways: int = 10,
    shots: int = 5,
    queries: int = 15,
    n_episodes: int = 300,
    seed: int = 0,
) -> tuple[Fusion, list[dict]]:
    """Standardize each (P, P) component matrix of a seen-class pool and pick the weights.

    Returns the fusion and the search table (weights and seen-class episode accuracy of each
    grid point), so the choice can be recorded.
    """
    names = tuple(sims)
    stats = [standardization(sims[n]) for n in names]
    z = [(sims[n] - mu) / sd for n, (mu, sd) in zip(names, stats, strict=True)]
    classes = tuple(int(c) for c in np.unique(labels))
    protocol = Episodes(ways=ways, shots=shots, queries=queries, episodes=n_episodes, seed=seed)
    table = []
    best, best_acc = None, -1.0
    for weights in simplex_grid(len(names), step):
        fused = sum(w * m for w, m in zip(weights, z, strict=True))
        (row,) = evaluate(MatrixScorer(fused), labels, classes, "fusion-fit", (protocol,))
        acc = row["value"]
        table.append({"weights": list(weights), "seen_top1": acc})
        if acc > best_acc:
            best, best_acc = weights, acc
    fusion = Fusion(
        names,
        tuple(mu for mu, _ in stats),
        tuple(sd for _, sd in stats),
        tuple(best),
    )
    return fusion, table
