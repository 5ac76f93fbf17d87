"""The one evaluation API: protocols built from names and settings, one ``evaluate`` call."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imsim.errors import UserError
from imsim.protocols import (
    PROTOCOLS,
    Episodes,
    Retrieval,
    Seed,
    build_protocols,
    evaluate,
)
from imsim.scoring import CosineScorer, MatrixScorer


def _pool(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(90, 100), 25)
    centers = rng.standard_normal((10, 16))
    feats = centers[labels - 90] + 1.5 * rng.standard_normal((len(labels), 16))
    return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32), labels


def test_build_protocols_from_names_and_episode_settings():
    protocols = build_protocols("seed,episodes,retrieval", ways=5, shots=3, episodes=20, seed=4)
    assert [p.name for p in protocols] == list(PROTOCOLS)
    assert protocols[0] == Seed() and protocols[2] == Retrieval()
    assert protocols[1] == Episodes(ways=5, shots=3, queries=15, episodes=20, seed=4)
    # Order as given, each once; a list works like the comma-separated string.
    assert [p.name for p in build_protocols(["retrieval", "seed", "retrieval"])] == [
        "retrieval",
        "seed",
    ]


@pytest.mark.parametrize(
    ("names", "match"),
    [("seed,knn", r"unknown protocol\(s\) \['knn'\]; choose from seed,episodes,retrieval"),
     ("", "no protocol given")],
)  # fmt: skip
def test_build_protocols_refuses_bad_names(names, match):
    with pytest.raises(UserError, match=match):
        build_protocols(names)


def test_protocol_settings_are_checked_and_frozen():
    with pytest.raises(UserError, match="ways, episodes >= 1"):
        Episodes(ways=0, episodes=0)
    with pytest.raises(UserError, match="k >= 1"):
        Seed(k=0)
    with pytest.raises(UserError, match="cut-offs"):
        Retrieval(ks=())
    with pytest.raises(dataclasses.FrozenInstanceError):
        Seed().shots = 3  # type: ignore[misc]


@pytest.mark.parametrize("agg", ["mean", "prototype", "images"])
def test_one_call_equals_each_protocol_alone(agg):
    feats, labels = _pool()
    classes = tuple(range(90, 100))
    scorer = CosineScorer(feats, agg)
    protocols = build_protocols("seed,episodes,retrieval", episodes=40, seed=3)
    rows = evaluate(scorer, labels, classes, "m", protocols)
    alone = [r for p in protocols for r in p.evaluate(scorer, labels, classes, "m")]
    assert rows == alone
    assert [(r["protocol"], r["metric"]) for r in rows] == [
        ("seed", "top5"),
        ("seed", "top1"),
        ("episodes", "top1"),
        ("retrieval", "recall@1"),
        ("retrieval", "recall@5"),
        ("retrieval", "map@r"),
    ]
    assert all(r["method"] == "m" for r in rows)


def test_episode_row_is_the_mean_of_the_paired_accuracies():
    feats, labels = _pool(1)
    classes = tuple(range(90, 100))
    protocol = Episodes(ways=5, episodes=30, seed=2)
    accs, ways = protocol.accuracies(CosineScorer(feats), labels, classes)
    (row,) = evaluate(CosineScorer(feats), labels, classes, "m", (protocol,))
    assert ways == 5 and len(accs) == 30
    assert row["value"] == accs.mean()
    # The same episodes whatever the scorer: a precomputed matrix of the same cosines agrees.
    (same,) = evaluate(MatrixScorer(feats @ feats.T), labels, classes, "m", (protocol,))
    assert same["value"] == pytest.approx(row["value"])


def test_class_names_reach_the_error_message():
    labels = np.repeat(np.arange(3), 10)
    names = ["cat", "dog", "ship"]
    with pytest.raises(UserError, match="classes cat, dog, ship have 10 test images"):
        evaluate(CosineScorer(np.eye(30)), labels, (0, 1, 2), "m", (Episodes(),), names)
