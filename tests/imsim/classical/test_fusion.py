"""Fusion: standardization and weights fit on seen classes."""

from __future__ import annotations

import numpy as np
import pytest

from imsim.classical.fusion import Fusion, fit_fusion, simplex_grid, standardization


def test_simplex_grid():
    grid = simplex_grid(3, 0.5)
    assert sorted(grid) == sorted(
        [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    )
    assert len(simplex_grid(3, 0.1)) == 66


def test_standardization_ignores_diagonal_and_inf():
    m = np.array([[9.0, 1.0, -np.inf], [3.0, 9.0, 1.0], [3.0, 1.0, 9.0]])
    mu, sd = standardization(m)
    assert mu == pytest.approx(np.mean([1, 3, 1, 3, 1]))
    assert sd == pytest.approx(np.std([1, 3, 1, 3, 1]))
    assert standardization(np.ones((3, 3))) == (1.0, 1.0)  # no spread: scale left alone


def test_fit_prefers_the_informative_component():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 20)
    same = (labels[:, None] == labels[None, :]).astype(float)
    informative = same + rng.normal(0, 0.6, same.shape)
    noise = 1000 * rng.normal(0, 1, same.shape)  # large scale, no signal
    fusion, table = fit_fusion(
        {"good": informative, "noise": noise}, labels, step=0.25, ways=5, n_episodes=50
    )
    assert fusion.components == ("good", "noise")
    assert fusion.weights[0] >= 0.75
    assert len(table) == 5
    best = max(r["seen_top1"] for r in table)
    assert best > 0.5  # chance is 0.2
    fused = fusion.combine({"good": informative, "noise": noise})
    assert fused.shape == same.shape


def test_combine_standardizes():
    f = Fusion(("a", "b"), (1.0, 10.0), (2.0, 5.0), (0.5, 0.5))
    out = f.combine({"a": np.array([3.0]), "b": np.array([0.0])})
    assert out[0] == pytest.approx(0.5 * 1.0 + 0.5 * -2.0)
