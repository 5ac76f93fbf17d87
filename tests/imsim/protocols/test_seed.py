import numpy as np
import pytest

from imsim.errors import UserError
from imsim.protocols import Seed, seed
from imsim.scoring import CosineScorer


def test_hit_rule_top_k():
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
    cands = np.array([10, 11, 12, 13])
    assert seed.topk_hits(scores, cands, np.array([11, 11]), 2).tolist() == [True, False]
    assert seed.topk_hits(scores, cands, np.array([10, 13]), 1).tolist() == [True, True]
    assert seed.topk_hits(scores, cands, np.array([12, 10]), 3).tolist() == [True, False]


def test_chance_levels():
    assert seed.default_k(10) == 5 and seed.chance(5, 10, 5, by_images=False) == 0.5
    assert seed.chance(1, 10, 5, by_images=False) == pytest.approx(0.1)
    # The study's method 4 ranks 50 support images: 1 - C(45,5)/C(50,5).
    assert seed.chance(5, 10, 5, by_images=True) == pytest.approx(0.4234, abs=1e-4)
    assert seed.chance(1, 10, 5, by_images=True) == pytest.approx(0.1)
    # Fewer unseen classes: k follows the class count (CIFAR-10's 5 unseen -> top-2 of 5).
    assert seed.default_k(5) == 2 and seed.chance(2, 5, 5, by_images=False) == pytest.approx(0.4)


def _pool(n_classes=10, per_class=8, noise=0.0, seed_=0):
    rng = np.random.default_rng(seed_)
    labels = np.repeat(np.arange(90, 90 + n_classes), per_class)
    centers = rng.standard_normal((n_classes, 16))
    feats = centers[labels - 90] + noise * rng.standard_normal((len(labels), 16))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return feats, labels


@pytest.mark.parametrize("agg", ["mean", "prototype", "images"])
def test_perfect_features_score_one(agg):
    feats, labels = _pool()
    rows = Seed().evaluate(CosineScorer(feats, agg), labels, tuple(range(90, 100)), "m")
    assert [r["metric"] for r in rows] == ["top5", "top1"]
    assert all(r["value"] == 1.0 for r in rows)
    assert rows[0]["n_queries"] == 30
    assert rows[0]["chance"] == pytest.approx(0.4234 if agg == "images" else 0.5, abs=1e-4)


def test_random_features_near_chance():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 105)
    feats = rng.standard_normal((len(labels), 64))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    top5, top1 = Seed().evaluate(CosineScorer(feats), labels, tuple(range(10)), "m")
    assert abs(top5["value"] - 0.5) < 0.05 and abs(top1["value"] - 0.1) < 0.03


def test_too_few_images_is_an_error():
    with pytest.raises(UserError, match="more than 5"):
        seed.seed_split(np.array([1, 1, 1, 2, 2, 2, 2, 2, 2]), (1, 2))


def test_wilson_interval_on_known_values():
    # Wilson (1927) 95% interval: 950 of 950 -> [0.99598, 1]; 0 of 10 -> [0, 0.2775];
    # 81 of 263 -> [0.2553, 0.3662] (Newcombe 1998, table I style check by hand).
    low, high = seed.wilson_interval(950, 950)
    assert high == 1.0 and low == pytest.approx(0.995973, abs=1e-5)
    assert seed.wilson_interval(0, 10) == (0.0, pytest.approx(0.277532, abs=1e-5))
    low, high = seed.wilson_interval(81, 263)
    assert low == pytest.approx(0.25529, abs=1e-4) and high == pytest.approx(0.36623, abs=1e-4)
    with pytest.raises(ValueError):
        seed.wilson_interval(0, 0)


@pytest.mark.parametrize("agg", ["mean", "images"])
def test_records_carry_a_wilson_interval_and_the_candidate_count(agg):
    feats, labels = _pool(noise=1.0)
    rows = Seed().evaluate(CosineScorer(feats, agg), labels, tuple(range(90, 100)), "m")
    for r in rows:
        hits = round(r["value"] * r["n_queries"])
        assert (r["ci95_low"], r["ci95_high"]) == seed.wilson_interval(hits, r["n_queries"])
        assert r["ci95_low"] <= r["value"] <= r["ci95_high"]
        # What is ranked: the 10 classes, or the 50 support images (the study's method 4).
        assert r["n_candidates"] == (50 if agg == "images" else 10)
