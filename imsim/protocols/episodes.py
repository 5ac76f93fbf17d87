"""``episodes``: N-way K-shot few-shot episodes over the unseen classes, top-1 with a 95% CI.

Each episode draws N unseen classes, then K support and Q query images per class, without
replacement, and classifies every query to its most similar class. The reported accuracy is the
mean over episodes; the confidence interval is 1.96 standard errors of the episode accuracies.
"""

from __future__ import annotations

import numpy as np

from imsim.errors import UserError
from imsim.methods.base import Scorer
from imsim.results import record


def episode_accuracies(
    scorer: Scorer,
    labels: np.ndarray,
    unseen: tuple[int, ...],
    ways: int = 10,
    shots: int = 5,
    queries: int = 15,
    episodes: int = 1000,
    seed: int = 0,
    class_names: list[str] | None = None,
) -> tuple[np.ndarray, int]:
    """Top-1 accuracy of each episode, and the ways used (capped at the unseen class count).

    The episodes drawn depend only on ``labels`` and the sampler flags, never on the scorer, so
    two scorers of the same pool are scored on the same episodes (``bench.parity`` pairs them).
    """
    labels = np.asarray(labels)
    classes = np.asarray(sorted(unseen))
    ways = min(ways, len(classes))
    if ways < 2:
        raise UserError("episodes need at least 2 unseen classes")
    pools = {c: np.flatnonzero(labels == c) for c in classes}
    short = [c for c, p in pools.items() if len(p) < shots + queries]
    if short:
        names = [class_names[c] if class_names else str(int(c)) for c in short]
        have = min(len(pools[c]) for c in short)
        raise UserError(
            f"classes {', '.join(names)} have {have} test images, fewer than --shots + --queries "
            f"= {shots + queries}; lower --shots or --queries"
        )
    rng = np.random.default_rng(seed)
    accs = np.empty(episodes)
    for e in range(episodes):
        chosen = rng.choice(classes, ways, replace=False)
        picks = [rng.choice(pools[c], shots + queries, replace=False) for c in chosen]
        s_idx = np.concatenate([p[:shots] for p in picks])
        q_idx = np.concatenate([p[shots:] for p in picks])
        sims = scorer.class_sim(q_idx, s_idx, labels[s_idx], chosen)
        accs[e] = np.mean(chosen[sims.argmax(axis=1)] == labels[q_idx])
    return accs, int(ways)


def evaluate(
    scorer: Scorer,
    labels: np.ndarray,
    unseen: tuple[int, ...],
    method: str,
    ways: int = 10,
    shots: int = 5,
    queries: int = 15,
    episodes: int = 1000,
    seed: int = 0,
    class_names: list[str] | None = None,
) -> list[dict]:
    accs, ways = episode_accuracies(
        scorer, labels, unseen, ways, shots, queries, episodes, seed, class_names
    )
    ci = 1.96 * accs.std(ddof=1) / np.sqrt(episodes) if episodes > 1 else float("nan")
    return [
        record(
            method,
            "episodes",
            "top1",
            accs.mean(),
            ci95=float(ci),
            chance=1.0 / ways,
            ways=int(ways),
            shots=shots,
            queries=queries,
            episodes=episodes,
            seed=seed,
        )
    ]
