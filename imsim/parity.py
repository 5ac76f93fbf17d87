"""How close a backend's embeddings are to the reference's, and the tolerances that decide it.

Tensor level: per-sample cosine between reference and backend embeddings of the same image, and
the absolute error of their elements. Task level: whether each image keeps its nearest neighbours
over the evaluation pool. Export checks and ``bench.parity`` both judge with these functions, so a
file that passed export passes the same test again later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerances:
    """PASS thresholds: cosine and neighbour agreement are minima, accuracy delta a maximum."""

    cos_min: float
    cos_mean: float
    top1_agreement: float = 0.99
    top5_overlap: float = 0.98
    acc_delta_points: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)


FP32_TOLERANCES = Tolerances(cos_min=0.99999, cos_mean=0.99999)
LOW_PRECISION_TOLERANCES = Tolerances(cos_min=0.999, cos_mean=0.9999)


def tolerances_for(precision: str) -> Tolerances:
    """FP32 backends must match to 1e-5 in cosine; fp16 and bf16 to 1e-3 (1e-4 on average)."""
    return FP32_TOLERANCES if precision == "fp32" else LOW_PRECISION_TOLERANCES


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)


def tensor_metrics(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Per-sample cosine (min, mean) and element-wise absolute error (max, median, p99)."""
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"reference {ref.shape} and backend {out.shape} outputs differ in shape")
    if not np.isfinite(out).all():
        return {
            "cosine_min": float("nan"),
            "cosine_mean": float("nan"),
            "abs_max": float("inf"),
            "abs_median": float("inf"),
            "abs_p99": float("inf"),
        }
    cos = np.sum(_unit(ref) * _unit(out), axis=1)
    err = np.abs(ref - out).ravel()
    return {
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "abs_max": float(err.max()),
        "abs_median": float(np.median(err)),
        "abs_p99": float(np.percentile(err, 99)),
    }


def _neighbours(feats: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k most cosine-similar other rows, nearest first."""
    u = _unit(feats)
    sims = u @ u.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def neighbour_agreement(ref: np.ndarray, out: np.ndarray, k: int = 5) -> dict[str, float]:
    """Fraction of images whose nearest neighbour is the same under both, and the mean overlap
    of their k-nearest-neighbour sets."""
    n = len(ref)
    if n < 2:
        raise ValueError("neighbour agreement needs at least 2 images")
    k = min(k, n - 1)
    a, b = _neighbours(ref, k), _neighbours(out, k)
    top1 = float(np.mean(a[:, 0] == b[:, 0]))
    overlap = np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)])
    return {"top1_agreement": top1, f"top{k}_overlap": float(overlap)}


def at_least(value: float, minimum: float) -> bool:
    """NaN-safe ``value >= minimum`` (NaN fails)."""
    return bool(np.isfinite(value) and value >= minimum)
