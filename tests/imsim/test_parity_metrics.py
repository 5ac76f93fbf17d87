import numpy as np
import pytest

from imsim.parity import (
    at_least,
    neighbour_report,
    paired_delta,
    tensor_metrics,
    tie_margin,
    tolerances_for,
)


def test_tensor_metrics_hand_computed():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    out = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]], np.float32)
    m = tensor_metrics(ref, out)
    assert m["cosine_min"] == pytest.approx(0.8) and m["cosine_mean"] == pytest.approx(2.8 / 3)
    assert m["abs_max"] == pytest.approx(0.6) and m["abs_median"] == pytest.approx(0.0)
    assert tensor_metrics(ref, ref)["cosine_min"] == pytest.approx(1.0)
    bad = tensor_metrics(ref, np.full_like(ref, np.nan))
    assert not at_least(bad["cosine_min"], 0.0) and bad["abs_max"] == np.inf
    with pytest.raises(ValueError, match="differ in shape"):
        tensor_metrics(ref, ref[:2])


def test_neighbour_agreement_detects_a_swap():
    # Points on a line: each one's nearest neighbour is unambiguous.
    angles = np.array([0.0, 0.1, 0.25, 0.45, 0.7, 1.0])
    ref = np.stack([np.cos(angles), np.sin(angles)], 1)
    same = neighbour_report(ref, ref, "fp32", ks=(1, 2))
    assert same["top1_agreement"] == 1.0 and same["recall_ref_top2"] == 1.0
    moved = ref.copy()
    moved[5] = [np.cos(0.2), np.sin(0.2)]  # point 5 jumps between points 1 and 2
    a = neighbour_report(ref, moved, "fp32", ks=(1, 2))
    assert 0.0 < a["top1_agreement"] < 1.0 and a["recall_ref_top2"] < 1.0
    assert a["top1_agreement_tie_aware"] == a["top1_agreement"]  # real moves, not ties


def _swap(margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference: a query at angle 0, candidate A at +t and B at -t2 with cos t - cos t2 =
    ``margin`` (A nearer). Backend: the same, with the query turned toward B just enough that B
    becomes its nearest neighbour."""
    t = 0.5
    t2 = float(np.arccos(np.cos(t) - margin))
    unit = lambda a: [np.cos(a), np.sin(a)]  # noqa: E731
    ref = np.array([unit(0.0), unit(t), unit(-t2)])
    out = np.array([unit(-((t2 - t) / 2 + 0.01)), unit(t), unit(-t2)])
    return ref, out


def test_a_swap_of_near_tied_neighbours_is_not_a_disagreement_but_a_real_one_is():
    bound = tie_margin("bf16")
    for margin, tied_in_bf16 in ((0.2 * bound, True), (5.0 * bound, False)):
        ref, out = _swap(margin)
        assert (ref @ ref.T)[0, 1] > (ref @ ref.T)[0, 2] and (out @ out.T)[0, 2] > (out @ out.T)[
            0, 1
        ]
        bf16 = neighbour_report(ref, out, "bf16", ks=(1,))
        fp32 = neighbour_report(ref, out, "fp32", ks=(1,))
        assert bf16["top1_agreement"] == fp32["top1_agreement"] == pytest.approx(2 / 3)
        assert bf16["top1_swaps"] == fp32["top1_swaps"] == 1
        assert fp32["top1_agreement_tie_aware"] == pytest.approx(2 / 3)  # fp32 resolves both
        if tied_in_bf16:  # below what bf16 resolves: not a disagreement in bf16
            assert bf16["top1_agreement_tie_aware"] == 1.0 and bf16["top1_swaps_tied"] == 1
        else:  # a real swap is a disagreement in every precision
            assert bf16["top1_agreement_tie_aware"] == pytest.approx(2 / 3)
            assert bf16["top1_swaps_tied"] == 0


def test_tie_margin_bounds_what_rounding_the_embeddings_can_do():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        x = rng.standard_normal((400, 64))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        r = torch.from_numpy(x).to(dtype).double().numpy()
        s, sr = x[:200] @ x[200:].T, r[:200] @ r[200:].T
        # Margins between two candidates of one query, before and after rounding.
        moved = np.abs((s[:, :-1] - s[:, 1:]) - (sr[:, :-1] - sr[:, 1:])).max()
        assert 0 < moved <= tie_margin(precision)
    assert tie_margin("fp32") < tie_margin("fp16") < tie_margin("bf16") < 0.02
    assert tie_margin("bf16") == pytest.approx(2 * (2 * 2**-8 + 2**-16))


def test_paired_delta_on_known_episodes():
    ref = np.array([0.5, 0.6, 0.7, 0.8])
    out = ref + np.array([0.0, 0.01, -0.01, 0.02])
    mean, ci = paired_delta(ref, out)
    d = np.array([0.0, 1.0, -1.0, 2.0])  # points
    assert mean == pytest.approx(d.mean()) and ci == pytest.approx(1.96 * d.std(ddof=1) / 2)
    # Episode difficulty cancels: a constant shift has no spread at all.
    assert paired_delta(ref, ref + 0.001) == (pytest.approx(0.1), pytest.approx(0.0))
    with pytest.raises(ValueError, match="same episodes"):
        paired_delta(ref, out[:3])


def test_default_tolerances_are_the_stated_ones():
    fp32, fp16 = tolerances_for("fp32"), tolerances_for("fp16")
    assert fp32.cos_min == 0.99999 and tolerances_for("bf16") == fp16
    assert (fp16.cos_min, fp16.cos_mean, fp16.top1_agreement, fp16.acc_delta_points) == (
        0.999,
        0.9999,
        0.99,
        0.3,
    )
    assert (fp16.tie_aware_top1, fp16.episode_delta_ci_points) == (0.99, 0.5)
