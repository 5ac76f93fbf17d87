"""SSIM kernels against scikit-image's structural_similarity."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from imsim.classical.ssim import WindowStats, largest_window, ssim, ssim_cross

TOL = 1e-6


def _ref(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
    return structural_similarity(
        a, b, win_size=win, data_range=255, channel_axis=-1 if a.ndim == 3 else None
    )


def _pairs(shape: tuple[int, ...], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    noisy = np.clip(a.astype(int) + rng.integers(-25, 26, shape), 0, 255).astype(np.uint8)
    return [
        (a, rng.integers(0, 256, shape, dtype=np.uint8)),  # unrelated
        (a, noisy),  # similar
        (a, a),  # identical
        (a, np.full(shape, 200, np.uint8)),  # against a constant image
    ]


@pytest.mark.parametrize("shape", [(32, 32), (7, 7), (9, 13), (40, 23), (16, 16, 3), (8, 11, 3)])
def test_matches_skimage_on_random_images(shape):
    for a, b in _pairs(shape):
        assert ssim(a, b) == pytest.approx(_ref(a, b), abs=TOL)


def test_constant_images():
    c = np.full((10, 12), 100, np.uint8)
    assert ssim(c, c) == pytest.approx(1.0, abs=TOL)
    for other in (c + 1, np.zeros_like(c), np.full_like(c, 255)):
        assert ssim(c, other) == pytest.approx(_ref(c, other), abs=TOL)
    # Constant, different images score below 1 (only the means differ).
    assert ssim(np.zeros_like(c), np.full_like(c, 255)) < 0.01


def test_images_smaller_than_the_window():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 256, (2, 5, 6), dtype=np.uint8)
    with pytest.raises(ValueError, match="exceeds"):
        _ref(a, b)  # scikit-image refuses the default 7x7 window ...
    with pytest.raises(ValueError, match="exceeds"):
        ssim(a, b)  # ... and so does the kernel
    win = largest_window(5, 6)
    assert win == 5
    assert ssim(a, b, win=win) == pytest.approx(_ref(a, b, win), abs=TOL)
    a3, b3 = rng.integers(0, 256, (2, 3, 4), dtype=np.uint8)
    assert ssim(a3, b3, win=3) == pytest.approx(_ref(a3, b3, 3), abs=TOL)


def test_window_validation():
    a = np.zeros((9, 9), np.uint8)
    with pytest.raises(ValueError, match="odd"):
        ssim(a, a, win=6)
    with pytest.raises(ValueError, match="too small"):
        largest_window(2, 9)
    assert largest_window(32, 32) == 7
    assert largest_window(6, 32) == 5


def test_batched_block_equals_pairwise():
    rng = np.random.default_rng(2)
    q = rng.integers(0, 256, (3, 20, 17), dtype=np.uint8)
    c = rng.integers(0, 256, (4, 20, 17), dtype=np.uint8)
    c[0] = q[1]
    out = ssim_cross(WindowStats(q, 7), WindowStats(c, 7), np.array([2, 0, 1]), np.array([3, 0]))
    assert out.shape == (3, 2)
    for i, qi in enumerate([2, 0, 1]):
        for j, cj in enumerate([3, 0]):
            assert out[i, j] == pytest.approx(_ref(q[qi], c[cj]), abs=TOL)
    assert ssim_cross(WindowStats(q, 7), WindowStats(c, 7))[1, 0] == pytest.approx(1.0)


def test_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        WindowStats(np.zeros((1, 8, 8), np.float32), 7)


def _real_images(zip_path: Path, n: int) -> np.ndarray:
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(x for x in z.namelist() if x.lower().endswith((".jpg", ".png")))[:n]
        return np.stack(
            [np.asarray(Image.open(io.BytesIO(z.read(x))).convert("RGB")) for x in names]
        )


@pytest.mark.realdata
def test_matches_skimage_on_real_images(cifar10_zip):
    images = _real_images(cifar10_zip, 6)
    gray = images.mean(axis=3).astype(np.uint8)
    for i in range(5):
        assert ssim(gray[i], gray[i + 1]) == pytest.approx(_ref(gray[i], gray[i + 1]), abs=TOL)
        assert ssim(images[i], images[i + 1]) == pytest.approx(
            _ref(images[i], images[i + 1]), abs=TOL
        )
    # Upsampled 224x224, the study's setting.
    big = np.asarray(Image.fromarray(gray[0]).resize((224, 224), Image.BILINEAR))
    big2 = np.asarray(Image.fromarray(gray[1]).resize((224, 224), Image.BILINEAR))
    assert ssim(big, big2) == pytest.approx(_ref(big, big2), abs=TOL)


def test_large_window_uses_int32_sums():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 256, (2, 20, 18), dtype=np.uint8)
    assert WindowStats(a[None], 13).sums.dtype == np.int32
    assert WindowStats(a[None], 7).sums.dtype == np.int16
    assert ssim(a, b, win=13) == pytest.approx(_ref(a, b, 13), abs=TOL)
