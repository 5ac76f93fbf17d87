"""SIFT descriptors once per image, and batched descriptor matching in numba.

Descriptors come from OpenCV's SIFT (``cv2.SIFT_create``), the detector the reference study
uses: scikit-image's ``SIFT`` takes about 37 ms per 224x224 image on the development machine
against about 3 ms for OpenCV's, which alone would put the study's 1,000-image protocol over
the 5-second budget (see the README). Images are described in a thread pool (OpenCV releases
the GIL), and the variable number of descriptors per image is kept in one flat array with
offsets (:class:`Descriptors`), so matching kernels can index any image pair directly.

Two matchers, both over (query, candidate) pairs in parallel with ``prange``:

* :func:`crosscheck_l1_mean`: the study's score, ``cv2.BFMatcher(NORM_L1, crossCheck=True)``
  then the mean match distance: a match is a pair of descriptors that are each other's nearest
  neighbour under L1; +inf when there is no match, an image without keypoints included.
* :func:`ratio_match_score`: Lowe's ratio test on L2 distances in both directions (a
  descriptor matches when its nearest neighbour is closer than ``ratio`` times the second
  nearest), score = matches in both directions / descriptors in both images, in [0, 1]; 0 when
  either image has fewer than two keypoints, since the ratio test needs two neighbours.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba as nb
import numpy as np

from imsim.errors import UserError

DESCRIPTOR_SIZE = 128
_JIT = {"cache": True, "error_model": "numpy"}


@dataclass(frozen=True)
class Descriptors:
    """The descriptors of N images: image i owns ``data[offsets[i]:offsets[i + 1]]``."""

    data: np.ndarray  # float32 (total, 128)
    offsets: np.ndarray  # int64 (N + 1,)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @staticmethod
    def concat(parts: list[Descriptors]) -> Descriptors:
        """The descriptors of several image sets, in order, as one set."""
        if not parts:
            return Descriptors(np.zeros((0, DESCRIPTOR_SIZE), np.float32), np.zeros(1, np.int64))
        counts = np.concatenate([p.counts() for p in parts])
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(counts)
        return Descriptors(np.concatenate([p.data for p in parts]), offsets)


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise UserError(
            "the keypoint component needs OpenCV: pip install opencv-python-headless"
        ) from e
    return cv2


def sift_descriptors(grays: np.ndarray, workers: int | None = None) -> Descriptors:
    """OpenCV SIFT (default parameters) descriptors of uint8 grayscale images (N, H, W)."""
    grays = np.asarray(grays)
    if grays.dtype != np.uint8 or grays.ndim != 3:
        raise ValueError(f"grays must be uint8 (N, H, W), got {grays.dtype} {grays.shape}")
    cv2 = _cv2()
    local = threading.local()

    def describe(g: np.ndarray) -> np.ndarray:
        if not hasattr(local, "sift"):
            local.sift = cv2.SIFT_create()
        _, desc = local.sift.detectAndCompute(np.ascontiguousarray(g), None)
        if desc is None:  # no keypoints
            return np.zeros((0, DESCRIPTOR_SIZE), dtype=np.float32)
        return np.asarray(desc, dtype=np.float32)

    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(grays) > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(describe, grays, chunksize=16))
    else:
        parts = [describe(g) for g in grays]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    data = np.concatenate(parts) if parts else np.zeros((0, DESCRIPTOR_SIZE), np.float32)
    return Descriptors(np.ascontiguousarray(data, dtype=np.float32), offsets)


@nb.njit(inline="always", fastmath=True, error_model="numpy")
def _l1(a, b):  # pragma: no cover - compiled
    s = np.float32(0.0)
    for k in range(a.shape[0]):
        s += abs(a[k] - b[k])
    return s


@nb.njit(inline="always", fastmath=True, error_model="numpy")
def _l2sq(a, b):  # pragma: no cover - compiled
    s = np.float32(0.0)
    for k in range(a.shape[0]):
        d = a[k] - b[k]
        s += d * d
    return s


@nb.njit(parallel=True, **_JIT)
def _crosscheck_kernel(data, offsets, qsel, csel):  # pragma: no cover - compiled
    n_q = len(qsel)
    n_c = len(csel)
    out = np.empty((n_q, n_c), dtype=np.float64)
    n_pairs = n_q * n_c
    n_chunks = min(n_pairs, 256)
    for ch in nb.prange(n_chunks):
        for p in range(ch * n_pairs // n_chunks, (ch + 1) * n_pairs // n_chunks):
            qa, qb = offsets[qsel[p // n_c]], offsets[qsel[p // n_c] + 1]
            ca, cb = offsets[csel[p % n_c]], offsets[csel[p % n_c] + 1]
            nq = qb - qa
            nc = cb - ca
            if nq == 0 or nc == 0:
                out[p // n_c, p % n_c] = np.inf
                continue
            dist = np.empty((nq, nc), dtype=np.float32)
            for i in range(nq):
                for j in range(nc):
                    dist[i, j] = _l1(data[qa + i], data[ca + j])
            # Mutual nearest neighbours (first minimum wins ties), as OpenCV's cross-check.
            best_q = np.empty(nc, dtype=np.int64)
            for j in range(nc):
                m = 0
                for i in range(1, nq):
                    if dist[i, j] < dist[m, j]:
                        m = i
                best_q[j] = m
            total = 0.0
            count = 0
            for i in range(nq):
                m = 0
                for j in range(1, nc):
                    if dist[i, j] < dist[i, m]:
                        m = j
                if best_q[m] == i:
                    total += dist[i, m]
                    count += 1
            out[p // n_c, p % n_c] = total / count if count else np.inf
    return out


def crosscheck_l1_mean(desc: Descriptors, q_sel: np.ndarray, c_sel: np.ndarray) -> np.ndarray:
    """(Q, M) mean L1 distance of cross-checked matches (the study's score); +inf for none."""
    return _crosscheck_kernel(
        desc.data, desc.offsets, np.asarray(q_sel, np.int64), np.asarray(c_sel, np.int64)
    )


@nb.njit(inline="always", fastmath=True, error_model="numpy")
def _ratio_count(dist, ratio_sq, transpose):  # pragma: no cover - compiled
    """Rows (or columns) whose nearest neighbour passes the ratio test on squared L2."""
    n_a, n_b = dist.shape
    if transpose:
        n_a, n_b = n_b, n_a
    count = 0
    for i in range(n_a):
        d1 = np.inf
        d2 = np.inf
        for j in range(n_b):
            d = dist[j, i] if transpose else dist[i, j]
            if d < d1:
                d2 = d1
                d1 = d
            elif d < d2:
                d2 = d
        if d1 < ratio_sq * d2:
            count += 1
    return count


@nb.njit(parallel=True, **_JIT)
def _ratio_kernel(data, offsets, qsel, csel, ratio):  # pragma: no cover - compiled
    n_q = len(qsel)
    n_c = len(csel)
    out = np.empty((n_q, n_c), dtype=np.float64)
    n_pairs = n_q * n_c
    n_chunks = min(n_pairs, 256)
    ratio_sq = np.float32(ratio * ratio)
    for ch in nb.prange(n_chunks):
        for p in range(ch * n_pairs // n_chunks, (ch + 1) * n_pairs // n_chunks):
            qa, qb = offsets[qsel[p // n_c]], offsets[qsel[p // n_c] + 1]
            ca, cb = offsets[csel[p % n_c]], offsets[csel[p % n_c] + 1]
            nq = qb - qa
            nc = cb - ca
            if nq < 2 or nc < 2:
                out[p // n_c, p % n_c] = 0.0
                continue
            dist = np.empty((nq, nc), dtype=np.float32)
            for i in range(nq):
                for j in range(nc):
                    dist[i, j] = _l2sq(data[qa + i], data[ca + j])
            matches = _ratio_count(dist, ratio_sq, False) + _ratio_count(dist, ratio_sq, True)
            out[p // n_c, p % n_c] = matches / (nq + nc)
    return out


def ratio_match_score(
    desc: Descriptors, q_sel: np.ndarray, c_sel: np.ndarray, ratio: float = 0.8
) -> np.ndarray:
    """(Q, M) share of descriptors passing Lowe's ratio test, both directions, in [0, 1]."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return _ratio_kernel(
        desc.data, desc.offsets, np.asarray(q_sel, np.int64), np.asarray(c_sel, np.int64), ratio
    )
