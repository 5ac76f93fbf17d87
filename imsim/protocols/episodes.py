"""``episodes``: N-way K-shot few-shot episodes over the unseen classes, top-1 with a 95% CI.

Each episode draws N unseen classes, then K support and Q query images per class, without
replacement, and classifies every query to its most similar class. The reported accuracy is the
mean over episodes; the confidence interval is 1.96 standard errors of the episode accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imsim.errors import UserError
from imsim.protocols.base import Protocol
from imsim.results import record
from imsim.scoring import Scorer


@dataclass(frozen=True)
class Episodes(Protocol):
    """The episode sampler: ``ways`` classes (capped at the class count), ``shots`` support and
    ``queries`` query images per class, ``episodes`` episodes drawn with ``seed``."""

    name = "episodes"
    ways: int = 10
    shots: int = 5
    queries: int = 15
    episodes: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [f for f in ("ways", "shots", "queries", "episodes") if getattr(self, f) < 1]
        if bad:
            raise UserError(f"episodes need {', '.join(bad)} >= 1, got {self}")

    def accuracies(
        self,
        scorer: Scorer,
        labels: np.ndarray,
        classes: tuple[int, ...],
        class_names: list[str] | None = None,
    ) -> tuple[np.ndarray, int]:
        """Top-1 accuracy of each episode, and the ways used (capped at the class count).

        The episodes drawn depend only on ``labels`` and the sampler, never on the scorer, so
        two scorers of the same pool are scored on the same episodes (``bench.parity`` pairs
        them).
        """
        labels = np.asarray(labels)
        ranked = np.asarray(sorted(classes))
        ways = min(self.ways, len(ranked))
        if ways < 2:
            raise UserError("episodes need at least 2 unseen classes")
        shots, queries = self.shots, self.queries
        pools = {c: np.flatnonzero(labels == c) for c in ranked}
        short = [c for c, p in pools.items() if len(p) < shots + queries]
        if short:
            names = [class_names[c] if class_names else str(int(c)) for c in short]
            have = min(len(pools[c]) for c in short)
            raise UserError(
                f"classes {', '.join(names)} have {have} test images, fewer than --shots + "
                f"--queries = {shots + queries}; lower --shots or --queries"
            )
        rng = np.random.default_rng(self.seed)
        accs = np.empty(self.episodes)
        for e in range(self.episodes):
            chosen = rng.choice(ranked, ways, replace=False)
            picks = [rng.choice(pools[c], shots + queries, replace=False) for c in chosen]
            s_idx = np.concatenate([p[:shots] for p in picks])
            q_idx = np.concatenate([p[shots:] for p in picks])
            sims = scorer.class_sim(q_idx, s_idx, labels[s_idx], chosen)
            accs[e] = np.mean(chosen[sims.argmax(axis=1)] == labels[q_idx])
        return accs, int(ways)

    def evaluate(
        self,
        scorer: Scorer,
        labels: np.ndarray,
        classes: tuple[int, ...],
        method: str,
        class_names: list[str] | None = None,
    ) -> list[dict]:
        accs, ways = self.accuracies(scorer, labels, classes, class_names)
        n = self.episodes
        ci = 1.96 * accs.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
        return [
            record(
                method,
                self.name,
                "top1",
                accs.mean(),
                ci95=float(ci),
                chance=1.0 / ways,
                ways=int(ways),
                shots=self.shots,
                queries=self.queries,
                episodes=n,
                seed=self.seed,
            )
        ]
