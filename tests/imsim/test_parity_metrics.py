import numpy as np
import pytest

from imsim.parity import at_least, neighbour_agreement, tensor_metrics, tolerances_for


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
    assert neighbour_agreement(ref, ref, k=2) == {"top1_agreement": 1.0, "top2_overlap": 1.0}
    moved = ref.copy()
    moved[5] = [np.cos(0.2), np.sin(0.2)]  # point 5 jumps between points 1 and 2
    a = neighbour_agreement(ref, moved, k=2)
    assert 0.0 < a["top1_agreement"] < 1.0 and a["top2_overlap"] < 1.0


def test_default_tolerances_are_the_stated_ones():
    fp32, fp16 = tolerances_for("fp32"), tolerances_for("fp16")
    assert fp32.cos_min == 0.99999 and tolerances_for("bf16") == fp16
    assert (fp16.cos_min, fp16.cos_mean, fp16.top1_agreement, fp16.acc_delta_points) == (
        0.999,
        0.9999,
        0.99,
        0.3,
    )
