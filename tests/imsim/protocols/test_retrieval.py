import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from imsim.protocols import Retrieval
from imsim.protocols.retrieval import retrieval_metrics
from imsim.scoring import CosineScorer


def test_hand_computed_case():
    # 4 items, classes A A B B. Similarities chosen so that:
    # q0: ranks 2(B) 1(A) 3(B) -> recall@1 0, recall@2 1; R=1, AP@R = 0
    # q1: ranks 0(A) ...       -> hit at 1; AP@R = 1
    # q2: ranks 0(A) 1(A) 3(B) -> miss; AP@R = 0
    # q3: ranks 2(B) ...       -> hit; AP@R = 1
    sims = np.array(
        [
            [0.0, 0.5, 0.9, 0.1],
            [0.9, 0.0, 0.2, 0.1],
            [0.8, 0.7, 0.0, 0.1],
            [0.1, 0.2, 0.9, 0.0],
        ]
    )
    m = retrieval_metrics(sims, np.array([0, 0, 1, 1]), ks=(1, 2))
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["recall@2"] == pytest.approx(0.75)
    assert m["map@r"] == pytest.approx(0.5)


def test_map_at_r_partial_credit():
    # Class A has 3 items: q0 ranks A(1) B A(2) -> R=2, AP@R = (1/1)/2 = 0.5.
    sims = np.array(
        [[0, 0.9, 0.1, 0.5], [0.9, 0, 0.8, 0.1], [0.1, 0.8, 0, 0.2], [0.5, 0.1, 0.2, 0]]
    )
    labels = np.array([0, 0, 0, 1])
    order0 = [1, 3, 2]
    assert [labels[i] for i in order0] == [0, 1, 0]
    m = retrieval_metrics(sims, labels)
    # q1: ranks 0(A) 2(A) -> AP 1; q2: ranks 1(A) 3(B) 0(A) -> 0.5; q3 has R=0, excluded.
    assert m["map@r"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def _pml_reference(f: np.ndarray, labels: np.ndarray) -> dict:
    """pytorch-metric-learning's precision@1 and mAP@R of a pool querying itself (cosine)."""
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        knn_func=CustomKNN(CosineSimilarity()),
    )
    t = torch.from_numpy(f)
    return calc.get_accuracy(t, torch.from_numpy(labels), ref_includes_query=True)


def test_matches_pytorch_metric_learning():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 20)
    centers = rng.standard_normal((6, 16))
    f = centers[labels] + 1.5 * rng.standard_normal((len(labels), 16))
    f = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
    ours = retrieval_metrics(f @ f.T, labels)
    ref = _pml_reference(f, labels)
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)


def test_evaluate_uses_only_unseen_pool():
    labels = np.array([0, 0, 5, 5, 6, 6])
    f = np.eye(6, dtype=np.float32)[[0, 0, 2, 2, 4, 4]]
    rows = Retrieval().evaluate(CosineScorer(f), labels, (5, 6), "m")
    assert {r["metric"]: r["value"] for r in rows}["recall@1"] == 1.0
    assert rows[0]["n_queries"] == 4


def test_a_query_alone_in_its_class_is_left_out_like_pytorch_metric_learning():
    rng = np.random.default_rng(1)
    labels = np.array([0] * 8 + [1] * 8 + [2])  # class 2 has one image: it can never be right
    f = rng.standard_normal((len(labels), 8))
    f = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
    ours = retrieval_metrics(f @ f.T, labels)
    kept = retrieval_metrics((f @ f.T)[:16, :16], labels[:16])
    assert ours["n_excluded"] == 1 and kept["n_excluded"] == 0
    ref = _pml_reference(f, labels)
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    scorer = CosineScorer(f)
    rows = {r["metric"]: r for r in Retrieval().evaluate(scorer, labels, (0, 1, 2), "x")}
    assert rows["recall@1"]["n_queries"] == 16 and rows["recall@1"]["n_excluded"] == 1


def test_tied_minus_infinity_never_drops_another_item_for_the_query():
    # q0's only same-class neighbour (item 3) is tied at -inf with everything else: with the
    # query itself at -inf too, a stable sort kept item 0 and dropped item 3 from the ranking.
    ninf = -np.inf
    sims = np.array(
        [
            [0.0, ninf, ninf, ninf],
            [ninf, 0.0, 0.9, 0.1],
            [ninf, 0.9, 0.0, 0.1],
            [0.5, 0.1, 0.2, 0.0],
        ]
    )
    labels = np.array([0, 1, 1, 0])
    m = retrieval_metrics(sims, labels, ks=(1, 3))
    # q0 ranks 1, 2, 3 (all -inf, in order): its neighbour is 3rd -> recall@3 hit, AP@R 0.
    # q1 -> 2 hit; q2 -> 1 hit; q3 -> 0 hit.
    assert m["recall@1"] == pytest.approx(0.75) and m["recall@3"] == pytest.approx(1.0)
    assert m["map@r"] == pytest.approx(0.75)
