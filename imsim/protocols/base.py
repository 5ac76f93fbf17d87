"""The protocol interface: a frozen config that turns one scorer's pool into result rows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from imsim.scoring import Scorer


class Protocol(ABC):
    """One evaluation protocol; subclasses are frozen dataclasses holding its settings.

    ``evaluate`` scores the pool positions whose label is in ``classes`` and returns result rows
    (``imsim.results.record``) named after ``method``; ``class_names`` (the dataset's) only makes
    error messages readable.
    """

    name: ClassVar[str]

    @abstractmethod
    def evaluate(
        self,
        scorer: Scorer,
        labels: np.ndarray,
        classes: tuple[int, ...],
        method: str,
        class_names: list[str] | None = None,
    ) -> list[dict]:
        """Result rows of ``method``'s ``scorer`` on the pool items of ``classes``."""
