"""Scorers: the abstract interface, cosine over vectors, pair scores without vectors."""

from __future__ import annotations

import numpy as np
import pytest

from imsim.methods.base import Embedder, MethodSpec, Scorer
from imsim.scoring import CosineScorer, MatrixScorer, PairwiseScorer


def test_the_interface_is_abstract():
    with pytest.raises(TypeError):
        Scorer()  # type: ignore[abstract]
    assert issubclass(CosineScorer, Scorer) and issubclass(MatrixScorer, PairwiseScorer)


def _feats() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 6)
    f = rng.standard_normal((len(labels), 8)).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True), labels


@pytest.mark.parametrize("agg", ["mean", "images"])
def test_pair_aggregation_matches_cosine(agg):
    """A matrix of the cosines gives the cosine scorer's class scores (mean and nearest)."""
    f, labels = _feats()
    q, s = np.arange(0, 24, 2), np.arange(1, 24, 2)
    classes = np.arange(4)
    cos = CosineScorer(f, agg)
    mat = MatrixScorer(f @ f.T, agg)
    np.testing.assert_allclose(mat.pair_sim(q, s), cos.pair_sim(q, s), rtol=1e-6)
    got = mat.class_sim(q, s, labels[s], classes)
    np.testing.assert_allclose(got, cos.class_sim(q, s, labels[s], classes), rtol=1e-5)
    sims = f[q] @ f[s].T
    by_hand = np.stack(
        [(sims[:, labels[s] == c].mean(1) if agg == "mean" else sims[:, labels[s] == c].max(1))
         for c in classes],
        axis=1,
    )  # fmt: skip
    np.testing.assert_allclose(got, by_hand, rtol=1e-5)


def test_prototype_and_raw_prototypes():
    f, labels = _feats()
    raw = f * np.linspace(0.5, 3.0, len(f), dtype=np.float32)[:, None]
    s, q, classes = np.arange(0, 24, 3), np.arange(1, 24, 3), np.arange(4)
    scorer = CosineScorer(raw, "prototype", raw_prototypes=True)
    np.testing.assert_allclose(scorer.pair_sim(q, s), f[q] @ f[s].T, atol=1e-6)
    protos = np.stack([raw[s][labels[s] == c].sum(0) for c in classes])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    got = scorer.class_sim(q, s, labels[s], classes)
    np.testing.assert_allclose(got, f[q] @ protos.T, atol=1e-6)


def test_bad_aggregation_and_missing_support():
    with pytest.raises(ValueError, match="aggregation"):
        MatrixScorer(np.eye(3), "prototype")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="square"):
        MatrixScorer(np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least one support"):
        MatrixScorer(np.eye(3)).class_sim(np.arange(1), np.arange(1, 3), np.array([0, 0]),
                                          np.array([0, 1]))  # fmt: skip


def test_default_embedder_scorer_is_cosine_and_not_pairwise():
    class Plain(Embedder):
        spec = MethodSpec(name="plain", embedding_dim=2, support_aggregation="prototype")

        def embed(self, images: np.ndarray) -> np.ndarray:
            return np.zeros((len(images), 2), dtype=np.float32)

    scorer = Plain().scorer(np.eye(2, dtype=np.float32), [])
    assert isinstance(scorer, CosineScorer) and scorer.aggregation == "prototype"
    assert not Plain.spec.pairwise
