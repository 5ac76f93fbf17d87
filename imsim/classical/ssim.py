"""SSIM in numba, equal to ``skimage.metrics.structural_similarity`` on uint8 images, batched.

scikit-image computes SSIM of one pair with five uniform filters over float64 copies of both
images. Comparing one query with many candidates that way recomputes each image's own window
statistics (sums of x and x*x) for every pair, and the filters run over the whole image only to
have a border cropped away. Here:

* Each image's window statistics are computed once (:func:`window_stats`), as exact integer
  window sums: for uint8 inputs every window sum of x, x*x and x*y fits in int32, so the
  variance and covariance numerators ``N*Sxx - Sx**2`` and ``N*Sxy - Sx*Sy`` are exact instead
  of the difference of two nearly equal floats.
* Per pair only the cross term ``Sxy`` is new: a 7-tap horizontal sum of products per row and a
  sliding vertical sum over a ring of the last ``win`` rows, over the "valid" windows only (the
  ones scikit-image keeps after cropping ``(win - 1) // 2`` pixels at each border).
* The pair loop runs in parallel over (query, candidate) pairs with ``prange``.

With ``N = win**2``, the SSIM of one window is, after cancelling the common ``1/N**2`` and
``1/(N*(N-1))`` factors of scikit-image's ``ux, vx, vxy`` (sample covariance, its default)::

    (2*Sx*Sy + C1*N**2) * (2*(N*Sxy - Sx*Sy) + C2*N*(N-1))
    / ((Sx**2 + Sy**2 + C1*N**2) * (N*Sxx - Sx**2 + N*Syy - Sy**2 + C2*N*(N-1)))

with ``C1 = (0.01 * data_range)**2`` and ``C2 = (0.03 * data_range)**2``; the mean over the valid
windows (and over channels, as scikit-image does with ``channel_axis``) is the score. Only that
final ratio is rounded (float32), so results agree with scikit-image's float64 to about 1e-7.
"""

from __future__ import annotations

import numba as nb
import numpy as np

K1 = 0.01
K2 = 0.03
DEFAULT_WIN = 7
# Window sums of x*y must fit int32 exactly: win**2 * 255**2 < 2**31 for win <= 181.
MAX_WIN = 181


class WindowStats:
    """Per-image SSIM statistics over the valid windows, computed once per image.

    ``images``: uint8 (N, C, H, W); ``sums``: window sums Sx (N, C, h, w), int16 when they fit
    (windows up to 11x11: half the memory traffic of int32 in the pair loop), else int32;
    ``dterm`` = N*Sxx - Sx**2 + C2*N*(N-1)/2 as float32, so the pair kernel adds two
    per-image terms instead of recomputing the variances.
    """

    def __init__(self, images: np.ndarray, win: int, data_range: float = 255.0) -> None:
        images = _as_nchw(images)
        check_window(images.shape[2:], win)
        self.win = win
        self.data_range = float(data_range)
        self.c1, self.c2 = constants(win, data_range)
        self.images = images
        n, ch, height, width = images.shape
        shape = (n, ch, height - win + 1, width - win + 1)
        self.sums = np.empty(shape, dtype=np.int16 if win * win * 255 < 2**15 else np.int32)
        self.dterm = np.empty(shape, dtype=np.float32)
        _stats_kernel(images, win, self.c2, self.sums, self.dterm)

    def __len__(self) -> int:
        return len(self.images)


def constants(win: int, data_range: float = 255.0) -> tuple[float, float]:
    """scikit-image's C1, C2 scaled to window sums: (C1*N**2, C2*N*(N-1)), N = win**2."""
    n = win * win
    return (K1 * data_range) ** 2 * n * n, (K2 * data_range) ** 2 * n * (n - 1)


def check_window(shape: tuple[int, ...], win: int) -> None:
    """Raise ValueError where scikit-image would (window larger than the image, even window)."""
    if win < 3 or win % 2 == 0 or win > MAX_WIN:
        raise ValueError(f"SSIM window must be odd and in [3, {MAX_WIN}], got {win}")
    if min(shape) < win:
        raise ValueError(
            f"SSIM window {win} exceeds the image extent {tuple(shape)}; "
            "use a window no larger than the smaller side"
        )


def largest_window(height: int, width: int, win: int = DEFAULT_WIN) -> int:
    """The largest odd window <= ``win`` that fits an image (>= 3), for images under 7x7."""
    w = min(win, height, width)
    w -= 1 - w % 2
    if w < 3:
        raise ValueError(f"images of {height}x{width} are too small for SSIM (need 3x3)")
    return w


def _as_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) grayscale or (N, H, W, C) -> contiguous (N, C, H, W)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"SSIM kernels take uint8 images, got {images.dtype}")
    if images.ndim == 3:
        return np.ascontiguousarray(images[:, None])
    if images.ndim == 4:
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got {images.shape}")


# error_model="numpy": no ZeroDivisionError checks, which would stop the loops from vectorizing.
_JIT = {"cache": True, "error_model": "numpy"}


@nb.njit(parallel=True, **_JIT)
def _stats_kernel(images, win, c2, sums, dterm):  # pragma: no cover - compiled
    n_img, n_ch, height, width = images.shape
    w = width - win + 1
    npix = win * win
    half_c2 = np.float32(c2 / 2.0)
    for t in nb.prange(n_img * n_ch):
        i = t // n_ch
        c = t % n_ch
        img = images[i, c]
        # Vertical sliding sums of x and x*x over the last ``win`` rows, then horizontal sums.
        vs = np.zeros(width, dtype=np.int32)
        vq = np.zeros(width, dtype=np.int32)
        for r in range(height):
            for j in range(width):
                v = np.int32(img[r, j])
                vs[j] += v
                vq[j] += v * v
            if r >= win:
                for j in range(width):
                    v = np.int32(img[r - win, j])
                    vs[j] -= v
                    vq[j] -= v * v
            if r >= win - 1:
                o = r - win + 1
                for j in range(w):
                    s = vs[j]
                    q = vq[j]
                    for k in range(1, win):
                        s += vs[j + k]
                        q += vq[j + k]
                    sums[i, c, o, j] = s
                    dterm[i, c, o, j] = np.float32(npix * q - s * s) + half_c2


@nb.njit(inline="always", fastmath=True, error_model="numpy")
def _pair(x, y, sx, sy, dx, dy, win, c1, c2, ring, vcol):  # pragma: no cover
    """Mean SSIM of one pair (all channels), with caller-provided scratch rows.

    ``vcol`` keeps the vertical sums of x*y over the last ``win`` rows (``ring`` holds those
    rows' products to subtract them again); each output row then takes the horizontal window
    sum of ``vcol`` and applies the SSIM ratio in the same loop. The 7-wide window (the
    default) is spelled out so the compiler vectorizes it; other windows use an inner loop.
    """
    n_ch, height, width = x.shape
    w = width - win + 1
    h = height - win + 1
    npix = np.int32(win * win)
    fc1 = np.float32(c1)
    fc2 = np.float32(c2)
    total = 0.0
    for c in range(n_ch):
        ring[:, :] = 0
        vcol[:] = 0
        for r in range(height):
            xr = x[c, r]
            yr = y[c, r]
            rr = ring[r % win]
            for j in range(width):
                prod = np.int32(xr[j]) * np.int32(yr[j])
                vcol[j] += prod - rr[j]
                rr[j] = prod
            if r < win - 1:
                continue
            i = r - win + 1
            sxr = sx[c, i]
            syr = sy[c, i]
            dxr = dx[c, i]
            dyr = dy[c, i]
            row = np.float32(0.0)
            if win == 7:
                for j in range(w):
                    sxy = (
                        vcol[j] + vcol[j + 1] + vcol[j + 2] + vcol[j + 3]
                        + vcol[j + 4] + vcol[j + 5] + vcol[j + 6]
                    )  # fmt: skip
                    sa = np.int32(sxr[j])
                    sb = np.int32(syr[j])
                    p = sa * sb
                    a1 = np.float32(2 * p) + fc1
                    a2 = np.float32(2 * (npix * sxy - p)) + fc2
                    b1 = np.float32(sa * sa + sb * sb) + fc1
                    row += a1 * a2 / (b1 * (dxr[j] + dyr[j]))
            else:
                for j in range(w):
                    sxy = vcol[j]
                    for k in range(1, win):
                        sxy += vcol[j + k]
                    sa = np.int32(sxr[j])
                    sb = np.int32(syr[j])
                    p = sa * sb
                    a1 = np.float32(2 * p) + fc1
                    a2 = np.float32(2 * (npix * sxy - p)) + fc2
                    b1 = np.float32(sa * sa + sb * sb) + fc1
                    row += a1 * a2 / (b1 * (dxr[j] + dyr[j]))
            total += row
    return total / (n_ch * h * w)


@nb.njit(parallel=True, fastmath=True, **_JIT)
def _cross_kernel(qimg, qs, qd, qsel, cimg, cs, cd, csel, win, c1, c2):  # pragma: no cover
    n_q = len(qsel)
    n_c = len(csel)
    width = qimg.shape[3]
    out = np.empty((n_q, n_c), dtype=np.float64)
    n_pairs = n_q * n_c
    n_chunks = min(n_pairs, 256)
    for ch in nb.prange(n_chunks):
        ring = np.zeros((win, width), dtype=np.int32)
        vcol = np.zeros(width, dtype=np.int32)
        lo = ch * n_pairs // n_chunks
        hi = (ch + 1) * n_pairs // n_chunks
        for p in range(lo, hi):
            a = qsel[p // n_c]
            b = csel[p % n_c]
            out[p // n_c, p % n_c] = _pair(
                qimg[a], cimg[b], qs[a], cs[b], qd[a], cd[b], win, c1, c2, ring, vcol,
            )  # fmt: skip
    return out


def ssim_cross(
    queries: WindowStats,
    candidates: WindowStats,
    q_sel: np.ndarray | None = None,
    c_sel: np.ndarray | None = None,
) -> np.ndarray:
    """(Q, M) mean SSIM of every selected query against every selected candidate (float64).

    ``q_sel``/``c_sel`` index into the two stats sets (default: all), so one set of precomputed
    statistics can serve many calls.
    """
    if queries.win != candidates.win or queries.data_range != candidates.data_range:
        raise ValueError("query and candidate statistics use different windows or data ranges")
    if queries.images.shape[1:] != candidates.images.shape[1:]:
        raise ValueError(
            f"image shapes differ: {queries.images.shape[1:]} vs {candidates.images.shape[1:]}"
        )
    q_sel = np.arange(len(queries)) if q_sel is None else np.asarray(q_sel, dtype=np.int64)
    c_sel = np.arange(len(candidates)) if c_sel is None else np.asarray(c_sel, dtype=np.int64)
    if len(q_sel) == 0 or len(c_sel) == 0:
        return np.zeros((len(q_sel), len(c_sel)), dtype=np.float64)
    return _cross_kernel(
        queries.images, queries.sums, queries.dterm, q_sel,
        candidates.images, candidates.sums, candidates.dterm, c_sel,
        queries.win, queries.c1, queries.c2,
    )  # fmt: skip


def ssim(
    im1: np.ndarray, im2: np.ndarray, win: int = DEFAULT_WIN, data_range: float = 255.0
) -> float:
    """SSIM of two uint8 images, (H, W) grayscale or (H, W, C) averaged over channels.

    Same value as ``structural_similarity(im1, im2, win_size=win, data_range=data_range,
    channel_axis=-1 if color else None)``.
    """
    im1, im2 = np.asarray(im1), np.asarray(im2)
    if im1.shape != im2.shape:
        raise ValueError(f"image shapes differ: {im1.shape} vs {im2.shape}")
    a = WindowStats(im1[None], win, data_range)
    b = WindowStats(im2[None], win, data_range)
    return float(ssim_cross(a, b)[0, 0])
