"""Color histograms (joint RGB and HSV) and their comparisons, in numba.

Histograms are computed once per image; comparisons run over (query, candidate) pairs in
parallel. The four comparisons are OpenCV's ``compareHist`` definitions (the reference study
compares its 8x8x8 RGB histograms with ``HISTCMP_CORREL``):

* ``correl``: Pearson correlation of the bin counts (1 when a histogram is constant);
* ``chisqr``: sum over bins of (h1 - h2)**2 / h1, bins with h1 == 0 skipped (not symmetric);
* ``intersect``: sum of min(h1, h2);
* ``bhattacharyya``: sqrt(1 - sum(sqrt(h1 * h2)) / sqrt(sum(h1) * sum(h2))), a distance in [0, 1].

``correl`` and ``intersect`` grow with similarity, ``chisqr`` and ``bhattacharyya`` are
distances; :func:`similarity` flips the distances so that higher always means more similar.
"""

from __future__ import annotations

import numba as nb
import numpy as np

COMPARISONS = ("correl", "chisqr", "intersect", "bhattacharyya")
_CODES = {name: i for i, name in enumerate(COMPARISONS)}
_DBL_EPSILON = np.finfo(np.float64).eps
_FLT_EPSILON = float(np.finfo(np.float32).eps)
_JIT = {"cache": True, "error_model": "numpy"}


@nb.njit(parallel=True, **_JIT)
def _rgb_kernel(images, bins):  # pragma: no cover - compiled
    n, height, width, _ = images.shape
    out = np.zeros((n, bins * bins * bins), dtype=np.float32)
    for i in nb.prange(n):
        counts = np.zeros(bins * bins * bins, dtype=np.int64)
        for r in range(height):
            for c in range(width):
                # Uniform bins over [0, 256): bin = value * bins // 256, as cv2.calcHist.
                b0 = (np.int64(images[i, r, c, 0]) * bins) >> 8
                b1 = (np.int64(images[i, r, c, 1]) * bins) >> 8
                b2 = (np.int64(images[i, r, c, 2]) * bins) >> 8
                counts[(b0 * bins + b1) * bins + b2] += 1
        for k in range(bins * bins * bins):
            out[i, k] = counts[k]
    return out


def rgb_histograms(images: np.ndarray, bins: int = 8) -> np.ndarray:
    """Joint RGB histogram counts, float32 (N, bins**3), bin index (r * bins + g) * bins + b."""
    images = _check(images)
    if not 1 <= bins <= 256:
        raise ValueError(f"bins must be in [1, 256], got {bins}")
    return _rgb_kernel(images, bins)


@nb.njit(parallel=True, **_JIT)
def _hsv_kernel(images, hb, sb, vb):  # pragma: no cover - compiled
    n, height, width, _ = images.shape
    out = np.zeros((n, hb * sb * vb), dtype=np.float32)
    for i in nb.prange(n):
        counts = np.zeros(hb * sb * vb, dtype=np.int64)
        for row in range(height):
            for col in range(width):
                # skimage.color.rgb2hsv, value for value (float64 x * (1 / 255), as img_as_float).
                r = images[i, row, col, 0] * (1.0 / 255.0)
                g = images[i, row, col, 1] * (1.0 / 255.0)
                b = images[i, row, col, 2] * (1.0 / 255.0)
                v = max(r, g, b)
                delta = v - min(r, g, b)
                s = delta / v if v != 0.0 else 0.0
                h = 0.0
                if delta != 0.0:
                    # Later cases win ties, as in skimage (blue over green over red).
                    if b == v:
                        h = 4.0 + (r - g) / delta
                    elif g == v:
                        h = 2.0 + (b - r) / delta
                    else:
                        h = (g - b) / delta
                    h = (h / 6.0) % 1.0
                hi = min(int(h * hb), hb - 1)
                si = min(int(s * sb), sb - 1)
                vi = min(int(v * vb), vb - 1)
                counts[(hi * sb + si) * vb + vi] += 1
        for k in range(hb * sb * vb):
            out[i, k] = counts[k]
    return out


def hsv_histograms(images: np.ndarray, bins: tuple[int, int, int] = (16, 4, 4)) -> np.ndarray:
    """Joint HSV histogram counts, float32 (N, hb * sb * vb), with skimage's HSV (all in [0, 1]).

    Hue is circular but binned linearly (red sits at both ends); the last bin of each channel
    is closed so that 1.0 lands in it.
    """
    images = _check(images)
    hb, sb, vb = (int(b) for b in bins)
    if min(hb, sb, vb) < 1:
        raise ValueError(f"bins must be positive, got {bins}")
    return _hsv_kernel(images, hb, sb, vb)


def _check(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images)


@nb.njit(inline="always", fastmath=True, error_model="numpy")
def _compare(a, b, code):  # pragma: no cover - compiled
    n = a.shape[0]
    if code == 0:  # correl
        s1 = s2 = s11 = s22 = s12 = 0.0
        for k in range(n):
            x = np.float64(a[k])
            y = np.float64(b[k])
            s1 += x
            s2 += y
            s11 += x * x
            s22 += y * y
            s12 += x * y
        num = s12 - s1 * s2 / n
        den2 = (s11 - s1 * s1 / n) * (s22 - s2 * s2 / n)
        return num / np.sqrt(den2) if abs(den2) > _DBL_EPSILON else 1.0
    if code == 1:  # chisqr
        acc = 0.0
        for k in range(n):
            x = np.float64(a[k])
            if abs(x) > _DBL_EPSILON:
                d = x - np.float64(b[k])
                acc += d * d / x
        return acc
    if code == 2:  # intersect
        acc = 0.0
        for k in range(n):
            acc += min(np.float64(a[k]), np.float64(b[k]))
        return acc
    s1 = s2 = acc = 0.0  # bhattacharyya
    for k in range(n):
        x = np.float64(a[k])
        y = np.float64(b[k])
        s1 += x
        s2 += y
        acc += np.sqrt(x * y)
    s = s1 * s2
    scale = 1.0 / np.sqrt(s) if abs(s) > _FLT_EPSILON else 1.0
    return np.sqrt(max(1.0 - acc * scale, 0.0))


@nb.njit(parallel=True, **_JIT)
def _cross_kernel(hq, qsel, hc, csel, code):  # pragma: no cover - compiled
    n_q = len(qsel)
    n_c = len(csel)
    out = np.empty((n_q, n_c), dtype=np.float64)
    for p in nb.prange(n_q * n_c):
        i = p // n_c
        j = p % n_c
        out[i, j] = _compare(hq[qsel[i]], hc[csel[j]], code)
    return out


def compare(
    queries: np.ndarray,
    candidates: np.ndarray,
    method: str = "correl",
    q_sel: np.ndarray | None = None,
    c_sel: np.ndarray | None = None,
) -> np.ndarray:
    """(Q, M) ``compareHist`` value of each selected query histogram against each candidate."""
    if method not in _CODES:
        raise ValueError(f"unknown histogram comparison {method!r}; use one of {COMPARISONS}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    candidates = np.ascontiguousarray(candidates, dtype=np.float32)
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"histogram shapes differ: {queries.shape} vs {candidates.shape}")
    q_sel = np.arange(len(queries)) if q_sel is None else np.asarray(q_sel, dtype=np.int64)
    c_sel = np.arange(len(candidates)) if c_sel is None else np.asarray(c_sel, dtype=np.int64)
    return _cross_kernel(queries, q_sel, candidates, c_sel, _CODES[method])


def similarity(values: np.ndarray, method: str) -> np.ndarray:
    """Comparison values turned into similarities (higher = more alike)."""
    return -values if method in ("chisqr", "bhattacharyya") else values
