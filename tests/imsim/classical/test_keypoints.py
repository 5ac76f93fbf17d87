"""SIFT descriptors and matching: OpenCV parity, hand-built descriptors, keypoint-free images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imsim.classical.keypoints import (
    DESCRIPTOR_SIZE,
    Descriptors,
    crosscheck_l1_mean,
    ratio_match_score,
    sift_descriptors,
)


def _textured(seed: int, size: int = 96) -> np.ndarray:
    """A smooth random texture: blurred noise, plenty of SIFT keypoints."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size // 8, size // 8), dtype=np.uint8)
    return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)


def _manual(*sets: list[list[float]]) -> Descriptors:
    parts = [np.zeros((len(s), DESCRIPTOR_SIZE), np.float32) for s in sets]
    for p, s in zip(parts, sets, strict=True):
        for i, row in enumerate(s):
            p[i, : len(row)] = row
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    data = np.concatenate(parts) if parts else np.zeros((0, DESCRIPTOR_SIZE), np.float32)
    return Descriptors(data, offsets)


def test_keypoint_free_images_do_not_crash():
    flat = np.full((40, 40), 128, np.uint8)
    grays = np.stack([flat, _textured(0, 40), np.zeros((40, 40), np.uint8)])
    desc = sift_descriptors(grays)
    counts = desc.counts()
    assert counts[0] == 0 and counts[2] == 0 and counts[1] > 0
    l1 = crosscheck_l1_mean(desc, np.arange(3), np.arange(3))
    assert np.isinf(l1[0]).all() and np.isinf(l1[:, 2]).all()  # no keypoints: no match
    assert np.isfinite(l1[1, 1]) and l1[1, 1] == 0.0  # an image matches itself exactly
    ratio = ratio_match_score(desc, np.arange(3), np.arange(3))
    assert (ratio[0] == 0).all() and (ratio[:, 0] == 0).all()


def test_crosscheck_matches_opencv_bfmatcher():
    grays = np.stack([_textured(s) for s in range(4)])
    desc = sift_descriptors(grays, workers=2)
    sift = cv2.SIFT_create()
    raw = [sift.detectAndCompute(g, None)[1] for g in grays]
    for i in range(4):
        np.testing.assert_array_equal(desc.data[desc.offsets[i] : desc.offsets[i + 1]], raw[i])
    ours = crosscheck_l1_mean(desc, np.arange(4), np.arange(4))
    bf = cv2.BFMatcher(cv2.NORM_L1, crossCheck=True)
    for i in range(4):
        for j in range(4):
            matches = bf.match(raw[i], raw[j])
            ref = sum(m.distance for m in matches) / len(matches)
            assert ours[i, j] == pytest.approx(ref, rel=1e-6)


def test_crosscheck_by_hand():
    # query: a=(0), b=(10); candidate: c=(1), d=(30)
    # a->c (1), b->c (9); c->a (1): only a-c is mutual; d->b (20) but b->c: not mutual.
    desc = _manual([[0.0], [10.0]], [[1.0], [30.0]])
    assert crosscheck_l1_mean(desc, np.array([0]), np.array([1]))[0, 0] == pytest.approx(1.0)


def test_ratio_score_by_hand():
    # query a=(0), b=(10); candidate c=(1), d=(9), e=(100)
    # a: nearest c (1), second d (81) in squared L2: 1 < 0.64 * 81 -> match
    # b: nearest d (1), second c (81) -> match
    # c: nearest a (1), second b (81) -> match; d: nearest b -> match; e: b (8100) vs a (10000)
    #    8100 < 0.64 * 10000 fails -> no match.  Score = 4 / 5.
    desc = _manual([[0.0], [10.0]], [[1.0], [9.0], [100.0]])
    assert ratio_match_score(desc, np.array([0]), np.array([1]))[0, 0] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="ratio"):
        ratio_match_score(desc, np.array([0]), np.array([1]), ratio=0.0)


def test_concat_keeps_order():
    a = _manual([[1.0]], [])
    b = _manual([[2.0], [3.0]])
    c = Descriptors.concat([a, b])
    np.testing.assert_array_equal(c.counts(), [1, 0, 2])
    assert c.data[1, 0] == 2.0
