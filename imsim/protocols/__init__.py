"""Evaluation protocols on unseen classes: ``seed`` (the study's), ``episodes``, ``retrieval``.

Every protocol is a small frozen config (:class:`Seed`, :class:`Episodes`, :class:`Retrieval`);
:func:`build_protocols` makes them from names and the episode sampler's settings, and
:func:`evaluate` runs any of them on one scorer, like pytorch-metric-learning's
``AccuracyCalculator`` computes every requested metric in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from imsim.errors import UserError
from imsim.protocols.base import Protocol
from imsim.protocols.episodes import Episodes
from imsim.protocols.retrieval import Retrieval
from imsim.protocols.seed import Seed
from imsim.scoring import Scorer

PROTOCOLS = ("seed", "episodes", "retrieval")


def build_protocols(
    names: str | Iterable[str],
    *,
    ways: int = 10,
    shots: int = 5,
    queries: int = 15,
    episodes: int = 1000,
    seed: int = 0,
) -> tuple[Protocol, ...]:
    """Protocols by name (a comma-separated string or a list), in order, each once.

    The keyword arguments configure the ``episodes`` sampler (the CLI's ``--ways``, ``--shots``,
    ``--queries``, ``--episodes``, ``--seed``); ``seed`` and ``retrieval`` keep the study's
    settings (5 support images per class, top-k with k = half the classes; Recall@1/5, mAP@R).
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    wanted = list(dict.fromkeys(n for n in names if n))
    bad = sorted(set(wanted) - set(PROTOCOLS))
    if bad:
        raise UserError(f"unknown protocol(s) {bad}; choose from {','.join(PROTOCOLS)}")
    if not wanted:
        raise UserError(f"no protocol given; choose from {','.join(PROTOCOLS)}")
    make: dict[str, Callable[[], Protocol]] = {
        "seed": Seed,
        "episodes": lambda: Episodes(ways, shots, queries, episodes, seed),
        "retrieval": Retrieval,
    }
    return tuple(make[n]() for n in wanted)


def evaluate(
    scorer: Scorer,
    labels: np.ndarray,
    classes: tuple[int, ...],
    method: str,
    protocols: Sequence[Protocol],
    class_names: list[str] | None = None,
) -> list[dict]:
    """Result rows of every protocol, in order, for ``method``'s scorer over one pool.

    ``labels``: the pool's labels (pool positions index the scorer); ``classes``: the classes
    evaluated (the unseen ones); ``class_names``: the dataset's, for readable errors.
    """
    rows: list[dict] = []
    for protocol in protocols:
        rows += protocol.evaluate(scorer, labels, classes, method, class_names)
    return rows


__all__ = [
    "PROTOCOLS",
    "Episodes",
    "Protocol",
    "Retrieval",
    "Seed",
    "build_protocols",
    "evaluate",
]
