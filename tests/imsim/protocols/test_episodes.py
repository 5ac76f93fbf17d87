import numpy as np
import pytest

from imsim.errors import UserError
from imsim.protocols import Episodes
from imsim.scoring import CosineScorer


def _feats(labels, noise, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((labels.max() + 1, 32))
    f = centers[labels] + noise * rng.standard_normal((len(labels), 32))
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def test_perfect_features_give_full_accuracy_and_zero_ci():
    labels = np.repeat(np.arange(12), 25)
    (row,) = Episodes(episodes=50).evaluate(
        CosineScorer(_feats(labels, 0.0)), labels, tuple(range(12)), "m"
    )
    assert row["value"] == 1.0 and row["ci95"] == 0.0
    assert row["ways"] == 10 and row["chance"] == pytest.approx(0.1)


def test_ci_is_normal_interval_of_episode_means():
    labels = np.repeat(np.arange(5), 40)
    scorer = CosineScorer(_feats(labels, 2.0))
    protocol = Episodes(ways=5, shots=5, queries=15, episodes=200, seed=7)
    (row,) = protocol.evaluate(scorer, labels, tuple(range(5)), "m")
    # Recompute the per-episode accuracies with the same sampler.
    accs = []
    rng = np.random.default_rng(7)
    classes = np.arange(5)
    pools = {c: np.flatnonzero(labels == c) for c in classes}
    for _ in range(200):
        chosen = rng.choice(classes, 5, replace=False)
        picks = [rng.choice(pools[c], 20, replace=False) for c in chosen]
        s = np.concatenate([p[:5] for p in picks])
        q = np.concatenate([p[5:] for p in picks])
        sims = scorer.class_sim(q, s, labels[s], chosen)
        accs.append(np.mean(chosen[sims.argmax(1)] == labels[q]))
    accs = np.array(accs)
    assert row["value"] == pytest.approx(accs.mean())
    assert row["ci95"] == pytest.approx(1.96 * accs.std(ddof=1) / np.sqrt(200))
    assert 0.2 < row["value"] < 1.0 and row["ci95"] > 0


def test_random_features_near_chance_and_ways_capped():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 30)
    f = rng.standard_normal((len(labels), 64))
    (row,) = Episodes(episodes=300).evaluate(
        CosineScorer(f / np.linalg.norm(f, axis=1, keepdims=True)), labels, tuple(range(5)), "m"
    )
    assert row["ways"] == 5 and abs(row["value"] - 0.2) < 3 * row["ci95"] + 0.01


def test_not_enough_images():
    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(UserError, match="fewer than"):
        Episodes().evaluate(CosineScorer(np.eye(30)), labels, (0, 1, 2), "m")


def test_too_few_images_names_the_classes():
    labels = np.repeat(np.arange(3), 10)
    names = ["cat", "dog", "ship"]
    with pytest.raises(UserError, match=r"classes cat, dog, ship have 10 test images.*--shots"):
        Episodes().evaluate(CosineScorer(np.eye(30)), labels, (0, 1, 2), "m", class_names=names)
