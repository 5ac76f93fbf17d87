"""The classical pipeline through the scorer interface: pair scores only, no feature vectors."""

from __future__ import annotations

import numpy as np
import pytest

from imsim.methods.base import Scorer
from imsim.methods.classical import ClassicalEmbedder, ClassicalScorer
from imsim.protocols import build_protocols, evaluate
from imsim.scoring import CosineScorer, MatrixScorer, PairwiseScorer


def _images(per_class: int = 25, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of flat colors with noise: any color score separates them."""
    rng = np.random.default_rng(0)
    colors = np.array([[200, 40, 40], [40, 180, 60], [50, 50, 210]])
    labels = np.repeat(np.arange(3), per_class)
    noise = rng.normal(0, 25, (len(labels), size, size, 3))
    images = np.clip(colors[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize(("name", "components"), [("hist", ("hist",)), ("ssim", ("ssim",))])
def test_classical_scorer_is_a_pairwise_scorer(name, components):
    images, labels = _images()
    method = ClassicalEmbedder(name, components)
    assert method.spec.pairwise
    scorer = method.scorer(method.embed(images), [])
    assert isinstance(scorer, ClassicalScorer) and isinstance(scorer, PairwiseScorer)
    assert isinstance(scorer, Scorer) and not isinstance(scorer, CosineScorer)
    assert not hasattr(scorer, "feats")  # the images it scores are no feature vectors
    q, s = np.arange(0, 75, 5), np.setdiff1d(np.arange(75), np.arange(0, 75, 5))
    pairs = scorer.pair_sim(q, s)
    assert pairs.shape == (len(q), len(s))
    # The class score is the mean pair score over each class's support images.
    got = scorer.class_sim(q, s, labels[s], np.arange(3))
    by_hand = np.stack([pairs[:, labels[s] == c].mean(1) for c in range(3)], axis=1)
    np.testing.assert_allclose(got, by_hand, rtol=1e-12)


def test_classical_through_one_evaluate_call_equals_its_matrix():
    """Every protocol scores the classical scorer as it scores the same pair scores precomputed."""
    images, labels = _images()
    method = ClassicalEmbedder("hist", ("hist",))
    scorer = method.scorer(method.embed(images), [])
    pool = np.arange(len(labels))
    matrix = MatrixScorer(scorer.pair_sim(pool, pool))
    protocols = build_protocols("seed,episodes,retrieval", ways=3, shots=5, queries=15, episodes=30)
    rows = evaluate(scorer, labels, (0, 1, 2), "hist", protocols)
    assert rows == evaluate(matrix, labels, (0, 1, 2), "hist", protocols)
    assert {r["protocol"] for r in rows} == {"seed", "episodes", "retrieval"}
    assert all(r["value"] > 0.9 for r in rows if r["metric"] in ("top1", "recall@1"))
