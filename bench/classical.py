"""``python -m bench.classical``: speed of the numba classical kernels against their references.

In one process, on the same images (the unseen-class test images of ``--data``, prepared the
way the study's method 4 prepares them: upsampled to 224 and converted to its grayscale):

* SSIM: scikit-image's ``structural_similarity`` on ``--ref-pairs`` pairs, one call per pair,
  against the batched numba kernel on the seed protocol's whole query x support block (window
  statistics included); pairs/s of each, the speed-up and the max abs difference on the pairs
  both computed. Also at native resolution (no upsampling).
* Histograms: OpenCV (the study's ``calcHist`` + ``compareHist``; scikit-image has no histogram
  comparison) against the numba kernels: each image's 8x8x8 histogram once, then every
  query-support comparison, for each of the four comparisons; max abs difference per comparison.
* SIFT: OpenCV's (used) against scikit-image's, per 224x224 image, one thread.
* The whole seed-protocol run of ``classical --recipe seed`` (prepare every image, score the
  950 x 50 pairs, rank), end to end.

Numba's JIT compile (or cache load) time is measured on a first call with tiny inputs and
reported separately; it is not part of any timing. Prints a table and writes the results JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numba
import numpy as np
from skimage.metrics import structural_similarity

from imsim.classical import histograms, preprocess
from imsim.classical import ssim as ssim_kernels
from imsim.cli import add_data_args, load_data_from_args, positive_int, preflight, run
from imsim.methods import create_method
from imsim.protocols import Seed, evaluate
from imsim.protocols.seed import seed_split
from imsim.results import make_results, record, write_json_atomic

SIZE = 224


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.classical", description=__doc__.split("\n")[0]
    )
    add_data_args(p)
    p.add_argument(
        "--ref-pairs",
        type=positive_int,
        default=200,
        help="pairs timed with scikit-image at 224x224 (10x as many at native size)",
    )
    p.add_argument("--repeats", type=positive_int, default=3, help="best of N for numba timings")
    p.add_argument(
        "--sift-images", type=positive_int, default=20, help="images timed for SIFT (224x224)"
    )
    p.add_argument("--out", default="results/speed/classical.json", help="results JSON path")
    return p


def _best(fn, repeats: int) -> tuple[float, object]:
    """Best wall-clock seconds of ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def jit_warmup() -> float:
    """Compile (or load from cache) every kernel the benchmark times; returns seconds."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (3, 9, 9), dtype=np.uint8)
    st = ssim_kernels.WindowStats(g, 7)
    ssim_kernels.ssim_cross(st, st, np.arange(2), np.arange(3))
    ssim_kernels.ssim_cross(
        ssim_kernels.WindowStats(g[:2], 5), ssim_kernels.WindowStats(g, 5)
    )  # the generic-window path
    rgb = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    h = histograms.rgb_histograms(rgb)
    histograms.hsv_histograms(rgb)
    for m in histograms.COMPARISONS:
        histograms.compare(h, h, m)
    return time.perf_counter() - t0


def bench_ssim(
    grays: np.ndarray, q_idx: np.ndarray, s_idx: np.ndarray, ref_pairs: int, repeats: int
) -> dict:
    """numba pairs/s on the whole q x s block against scikit-image pairs/s on a sample."""

    def numba_block() -> np.ndarray:
        cand = ssim_kernels.WindowStats(grays[s_idx], 7)
        return ssim_kernels.ssim_cross(ssim_kernels.WindowStats(grays[q_idx], 7), cand)

    secs, block = _best(numba_block, repeats)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # per-core speed, less sensitive to other load on the machine
    try:
        secs_1t, _ = _best(numba_block, repeats)
    finally:
        numba.set_num_threads(threads)
    n_pairs = len(q_idx) * len(s_idx)
    rng = np.random.default_rng(0)
    sample = [
        (int(rng.integers(len(q_idx))), int(rng.integers(len(s_idx)))) for _ in range(ref_pairs)
    ]
    t0 = time.perf_counter()
    ref = [
        structural_similarity(grays[q_idx[i]], grays[s_idx[j]], win_size=7, data_range=255)
        for i, j in sample
    ]
    ref_secs = time.perf_counter() - t0
    diff = max(abs(block[i, j] - r) for (i, j), r in zip(sample, ref, strict=True))
    ours = n_pairs / secs
    theirs = ref_pairs / ref_secs
    return {
        "image_size": list(grays.shape[1:]),
        "numba_pairs": n_pairs,
        "numba_seconds": secs,
        "numba_pairs_per_s": ours,
        "numba_1thread_pairs_per_s": n_pairs / secs_1t,
        "speedup_1thread": n_pairs / secs_1t / theirs,
        "ref_pairs": ref_pairs,
        "ref_seconds": ref_secs,
        "ref_pairs_per_s": theirs,
        "speedup": ours / theirs,
        "max_abs_diff": float(diff),
    }


def bench_hist(images: np.ndarray, q_idx: np.ndarray, s_idx: np.ndarray, repeats: int) -> dict:
    """8x8x8 RGB histograms once per image, then every query-support comparison."""
    import cv2

    codes = {
        "correl": cv2.HISTCMP_CORREL,
        "chisqr": cv2.HISTCMP_CHISQR,
        "intersect": cv2.HISTCMP_INTERSECT,
        "bhattacharyya": cv2.HISTCMP_BHATTACHARYYA,
    }
    n_pairs = len(q_idx) * len(s_idx)
    out: dict = {"image_size": list(images.shape[1:3]), "pairs": n_pairs, "images": len(images)}

    def numba_all() -> np.ndarray:
        h = histograms.rgb_histograms(images)
        return histograms.compare(h, h, "correl", q_idx, s_idx)

    secs, _ = _best(numba_all, repeats)
    t0 = time.perf_counter()
    # Flattened, as the study does (OpenCV's CORREL on the 3-D histogram averages differently).
    ref_h = [
        cv2.calcHist([im], [0, 1, 2], None, [8, 8, 8], [0, 256, 0, 256, 0, 256]).ravel()
        for im in images
    ]
    ref = [[cv2.compareHist(ref_h[i], ref_h[j], codes["correl"]) for j in s_idx] for i in q_idx]
    ref_secs = time.perf_counter() - t0
    out.update(
        numba_seconds=secs,
        numba_pairs_per_s=n_pairs / secs,
        ref_seconds=ref_secs,
        ref_pairs_per_s=n_pairs / ref_secs,
        speedup=ref_secs / secs,
    )
    h = histograms.rgb_histograms(images)
    diffs = {}
    for name, code in codes.items():
        ours = histograms.compare(h, h, name, q_idx[:50], s_idx)
        ref = np.array(
            [[cv2.compareHist(ref_h[i], ref_h[j], code) for j in s_idx] for i in q_idx[:50]]
        )
        diffs[name] = float(np.max(np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))))
    out["max_rel_diff"] = diffs
    return out


def bench_sift(grays: np.ndarray) -> dict:
    """Per-image SIFT cost, OpenCV (used) against scikit-image's SIFT, one thread each."""
    import cv2
    from skimage.feature import SIFT

    sift = cv2.SIFT_create()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        t0 = time.perf_counter()
        n_cv = [len(sift.detectAndCompute(g, None)[0]) for g in grays]
        cv_s = (time.perf_counter() - t0) / len(grays)
    finally:
        cv2.setNumThreads(threads)
    sk = SIFT()
    n_sk = []
    t0 = time.perf_counter()
    for g in grays:
        try:
            sk.detect_and_extract(g)
            n_sk.append(len(sk.keypoints))
        except RuntimeError:  # no keypoints
            n_sk.append(0)
    sk_s = (time.perf_counter() - t0) / len(grays)
    return {
        "images": len(grays),
        "image_size": list(grays.shape[1:]),
        "opencv_ms_per_image": 1e3 * cv_s,
        "skimage_ms_per_image": 1e3 * sk_s,
        "opencv_mean_keypoints": float(np.mean(n_cv)),
        "skimage_mean_keypoints": float(np.mean(n_sk)),
    }


def bench_seed_run(ds, pool) -> dict:
    """End-to-end ``classical --recipe seed`` under the seed protocol (compile excluded)."""
    method = create_method("classical", recipe="seed")
    t0 = time.perf_counter()
    warm = method.scorer(method.embed(pool.images[:12]), ds.class_names)
    warm.pair_sim(np.arange(2), np.arange(2, 12))  # compiles the pair kernels
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = method.embed(pool.images)
    scorer = method.scorer(feats, ds.class_names)
    rows = evaluate(scorer, pool.labels, ds.split.unseen, "classical", (Seed(),))
    secs = time.perf_counter() - t0
    top = next(r for r in rows if r["k"] > 1) if any(r["k"] > 1 for r in rows) else rows[0]
    return {
        "seconds": secs,
        "warmup_seconds": warmup,
        "stage_seconds": dict(scorer.seconds),
        "images": len(pool),
        "pairs": top["n_queries"] * len(ds.split.unseen) * top["shots"],
        "accuracy": top["value"],
        "metric": top["metric"],
        "chance": top["chance"],
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preflight(args, files={"--out": args.out})
    ds = load_data_from_args(args)
    pool = ds.test.subset(ds.split.unseen)
    s_idx, q_idx = seed_split(pool.labels, ds.split.unseen)
    threads = numba.get_num_threads()
    print(
        f"{ds.name}: {len(pool)} unseen-class test images, seed protocol {len(q_idx)} queries x "
        f"{len(s_idx)} support; numba threads {threads}, cpus {os.cpu_count()}",
        file=sys.stderr,
    )
    jit_s = jit_warmup()
    up = preprocess.seed_upsample(pool.images, SIZE)
    gray224 = preprocess.to_gray(up, "bgr")  # the study's SSIM input
    gray_native = preprocess.to_gray(pool.images, "rgb")
    ssim224 = bench_ssim(gray224, q_idx, s_idx, args.ref_pairs, args.repeats)
    ssim_nat = bench_ssim(gray_native, q_idx, s_idx, 10 * args.ref_pairs, args.repeats)
    hist = bench_hist(up, q_idx, s_idx, args.repeats)
    sift = bench_sift(preprocess.to_gray(up[: args.sift_images], "rgb"))
    run_seed = bench_seed_run(ds, pool)

    rows = []
    for name, r in (("224x224", ssim224), ("native", ssim_nat)):
        rows += [
            record("ssim", "speed", "numba_pairs_per_s", r["numba_pairs_per_s"], size=name),
            record("ssim", "speed", "skimage_pairs_per_s", r["ref_pairs_per_s"], size=name),
            record("ssim", "speed", "speedup", r["speedup"], size=name),
            record("ssim", "speed", "speedup_1thread", r["speedup_1thread"], size=name),
            record("ssim", "parity", "max_abs_diff", r["max_abs_diff"], size=name),
        ]
    rows += [
        record("hist", "speed", "numba_pairs_per_s", hist["numba_pairs_per_s"], size="224x224"),
        record("hist", "speed", "opencv_pairs_per_s", hist["ref_pairs_per_s"], size="224x224"),
        record("hist", "speed", "speedup", hist["speedup"], size="224x224"),
        record("classical", "seed", "seconds", run_seed["seconds"], recipe="seed"),
    ]
    print(
        f"| kernel | image | numba pairs/s ({threads} threads) | numba pairs/s (1 thread) | "
        "reference pairs/s (1 thread) | speed-up | speed-up per thread | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in (ssim224, ssim_nat):
        size = "x".join(map(str, r["image_size"]))
        print(
            f"| SSIM vs scikit-image | {size} | {r['numba_pairs_per_s']:,.0f} | "
            f"{r['numba_1thread_pairs_per_s']:,.0f} | {r['ref_pairs_per_s']:,.0f} | "
            f"{r['speedup']:.0f}x | {r['speedup_1thread']:.0f}x | {r['max_abs_diff']:.1e} |"
        )
    print(
        f"| RGB 8x8x8 histogram + correl vs OpenCV | 224x224 | {hist['numba_pairs_per_s']:,.0f} "
        f"| | {hist['ref_pairs_per_s']:,.0f} | {hist['speedup']:.1f}x | | "
        f"{max(hist['max_rel_diff'].values()):.1e} (relative, 4 comparisons) |"
    )
    print(
        f"SIFT per 224x224 image, 1 thread: OpenCV {sift['opencv_ms_per_image']:.1f} ms "
        f"({sift['opencv_mean_keypoints']:.0f} keypoints), scikit-image "
        f"{sift['skimage_ms_per_image']:.1f} ms ({sift['skimage_mean_keypoints']:.0f} keypoints)"
    )
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in run_seed["stage_seconds"].items())
    print(
        f"seed-protocol run (classical --recipe seed, {run_seed['images']} images, "
        f"{run_seed['pairs']:,} pairs): {run_seed['seconds']:.2f} s ({stages}); "
        f"{run_seed['metric']} {100 * run_seed['accuracy']:.2f}% (chance "
        f"{100 * run_seed['chance']:.1f}%)"
    )
    print(
        f"numba JIT compile/cache load (not counted above): kernels {jit_s:.2f} s, "
        f"seed-run warm-up on 12 images {run_seed['warmup_seconds']:.2f} s"
    )
    doc = make_results(
        "classical-speed",
        rows,
        config=vars(args),
        dataset={"name": ds.name, "info": ds.info},
        threads={"numba": threads, "cpu_count": os.cpu_count()},
        ssim_speedup=ssim224["speedup"],
        ssim_speedup_1thread=ssim224["speedup_1thread"],
        ssim_max_abs_diff=max(ssim224["max_abs_diff"], ssim_nat["max_abs_diff"]),
        hist_speedup=hist["speedup"],
        seed_protocol_seconds=run_seed["seconds"],
        jit_seconds=jit_s,
        ssim={"224": ssim224, "native": ssim_nat},
        hist=hist,
        sift=sift,
        seed_protocol=run_seed,
    )
    print(f"wrote {write_json_atomic(args.out, doc)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
