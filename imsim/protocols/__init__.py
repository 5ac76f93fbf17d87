"""Evaluation protocols on unseen classes: ``seed`` (the study's), ``episodes``, ``retrieval``."""

from imsim.protocols import episodes, retrieval, seed

PROTOCOLS = ("seed", "episodes", "retrieval")

__all__ = ["PROTOCOLS", "episodes", "retrieval", "seed"]
