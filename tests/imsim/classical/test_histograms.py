"""Color histograms and their comparisons, against hand-computed values and OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.color import rgb2hsv

from imsim.classical.histograms import (
    COMPARISONS,
    compare,
    hsv_histograms,
    rgb_histograms,
    similarity,
)


def test_rgb_histogram_by_hand():
    img = np.array([[[0, 0, 0], [255, 255, 255]], [[31, 32, 200], [0, 0, 0]]], np.uint8)[None]
    h = rgb_histograms(img, bins=8)[0]
    assert h.sum() == 4
    assert h[0] == 2  # two black pixels
    assert h[(7 * 8 + 7) * 8 + 7] == 1  # white
    assert h[(0 * 8 + 1) * 8 + 6] == 1  # 31 -> bin 0, 32 -> bin 1, 200 -> bin 6


def test_rgb_histogram_matches_opencv():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 12, 9, 3), dtype=np.uint8)
    h = rgb_histograms(imgs)
    for i in range(3):
        ref = cv2.calcHist([imgs[i]], [0, 1, 2], None, [8, 8, 8], [0, 256, 0, 256, 0, 256])
        np.testing.assert_array_equal(h[i], ref.ravel())


def test_hsv_histogram_by_hand():
    # red, green, blue, white, black, yellow (r == g == max: green wins the tie, as skimage)
    px = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [255, 255, 0]]
    h = hsv_histograms(np.array(px, np.uint8)[None, None], bins=(6, 2, 2))[0]

    def b(hue, s, v):
        return (hue * 2 + s) * 2 + v

    expected = np.zeros(24)
    expected[b(0, 1, 1)] += 1  # red: h 0, s 1, v 1
    expected[b(2, 1, 1)] += 1  # green: h 1/3
    expected[b(4, 1, 1)] += 1  # blue: h 2/3
    expected[b(0, 0, 1)] += 1  # white: s 0
    expected[b(0, 0, 0)] += 1  # black
    expected[b(1, 1, 1)] += 1  # yellow: h 1/6
    np.testing.assert_array_equal(h, expected)


def test_hsv_histogram_matches_skimage():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    img[0, :4, :, 1] = img[0, :4, :, 0]  # ties between channels
    hsv = rgb2hsv(img[0]).reshape(-1, 3)
    idx = [np.minimum((hsv[:, k] * n).astype(int), n - 1) for k, n in enumerate((16, 4, 4))]
    ref = np.bincount((idx[0] * 4 + idx[1]) * 4 + idx[2], minlength=256)
    np.testing.assert_array_equal(hsv_histograms(img, (16, 4, 4))[0], ref)


def test_comparisons_by_hand():
    h1 = np.array([[1.0, 2.0, 3.0, 0.0]], np.float32)
    h2 = np.array([[2.0, 3.0, 1.0, 0.0]], np.float32)
    # correl: centered [-0.5, 0.5, 1.5, -1.5] . [0.5, 1.5, -0.5, -1.5] = 2, variances 5 and 5
    assert compare(h1, h2, "correl")[0, 0] == pytest.approx(2 / 5)
    # chisqr: (1-2)^2/1 + (2-3)^2/2 + (3-1)^2/3, the empty bin of h1 skipped
    assert compare(h1, h2, "chisqr")[0, 0] == pytest.approx(1 + 0.5 + 4 / 3)
    assert compare(h1, h2, "intersect")[0, 0] == pytest.approx(1 + 2 + 1 + 0)
    bc = (np.sqrt(2) + np.sqrt(6) + np.sqrt(3)) / np.sqrt(6 * 6)
    assert compare(h1, h2, "bhattacharyya")[0, 0] == pytest.approx(np.sqrt(1 - bc))
    # A constant histogram has no variance: OpenCV defines its correlation as 1.
    assert compare(np.ones((1, 4), np.float32), h2, "correl")[0, 0] == 1.0


def test_comparisons_match_opencv():
    rng = np.random.default_rng(2)
    h = rng.integers(0, 5, (4, 64)).astype(np.float32)
    codes = {
        "correl": cv2.HISTCMP_CORREL,
        "chisqr": cv2.HISTCMP_CHISQR,
        "intersect": cv2.HISTCMP_INTERSECT,
        "bhattacharyya": cv2.HISTCMP_BHATTACHARYYA,
    }
    for name in COMPARISONS:
        out = compare(h, h, name, np.array([0, 3]), np.array([1, 2, 3]))
        for i, qi in enumerate([0, 3]):
            for j, cj in enumerate([1, 2, 3]):
                assert out[i, j] == pytest.approx(cv2.compareHist(h[qi], h[cj], codes[name]))


def test_similarity_direction_and_errors():
    d = np.array([0.1, 0.5])
    np.testing.assert_array_equal(similarity(d, "bhattacharyya"), -d)
    np.testing.assert_array_equal(similarity(d, "correl"), d)
    with pytest.raises(ValueError, match="unknown"):
        compare(np.ones((1, 2)), np.ones((1, 2)), "emd")
    with pytest.raises(ValueError, match="uint8"):
        rgb_histograms(np.zeros((1, 2, 2, 3), np.float32))
