"""``classical``, ``ssim``, ``hist``, ``keypoints``: the study's method 4 and each of its parts.

These are not embeddings compared by cosine, so they plug into the method interface this way:

* ``embed`` returns each image itself, ``[H, W, pixels (H*W*3)]`` as float32, at its native
  size: the pipeline compares images, not vectors, and a pool of thousands stays small even
  when the recipe works at 224x224 (a 224x224 copy per image would be 50 times larger).
* ``scorer`` builds a :class:`ClassicalScorer` over a pool of those features. At construction
  it prepares every image once: the working-size image (the study's upsampling under
  ``--recipe seed``), its color histogram, the grayscale image SSIM compares, and the SIFT
  descriptors (a variable number per image, kept in one flat array with offsets).
  ``pair_sim`` then scores a batch of queries against a batch of candidates with the numba
  kernels, computing each image's SSIM window statistics once per call, not per pair.

Recipes:

* ``default``: native resolution; SSIM per RGB channel (7x7, or the largest window that fits),
  8x3x3 HSV histogram compared by Bhattacharyya, SIFT matches passing Lowe's ratio test (0.8
  before fitting; ``classical`` picks the ratio among ``RATIO_CANDIDATES`` on the seen classes,
  with its fusion weights). These variants were chosen on seen classes only
  (``python -m bench.classical_variants``).
  ``classical``
  standardizes each component and weights them with weights fit on seen classes
  (:mod:`imsim.classical.fusion`); classes are ranked by the mean score over their support images,
  like the other methods.
* ``seed``: the reference study's pipeline: upsampling to 224, 8x8x8 RGB histogram correlation,
  SSIM 7x7 on its grayscale (OpenCV's BGR conversion applied to RGB), SIFT mean L1 distance with
  cross-checked brute-force matching, fused as ``(hist + ssim - sift_distance) / 3``, ranking the
  individual support images (``support_aggregation="images"``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
from tqdm import tqdm

from imsim.classical import histograms, keypoints, preprocess
from imsim.classical import ssim as ssim_kernels
from imsim.classical.fusion import Fusion, fit_fusion
from imsim.data.types import Split
from imsim.errors import UserError
from imsim.methods.base import Embedder, MethodSpec, check_images
from imsim.methods.registry import register
from imsim.scoring import PairwiseScorer

COMPONENTS = ("ssim", "hist", "keypoints")
# Lowe's ratios the fit tries on the seen classes (a dataset's seen classes have preferred 0.7 or
# 0.8 in bench.classical_variants); ties keep the recipe's own ratio.
RATIO_CANDIDATES = (0.7, 0.8, 0.9)
_HEADER = 2  # H, W


@dataclass(frozen=True)
class Recipe:
    """Every choice that differs between the study's pipeline and the default one."""

    name: str
    size: int | None  # working side; None = native resolution
    ssim_gray: str  # "rgb" or "bgr" (see preprocess.to_gray), or "color": SSIM per channel
    ssim_win: int
    hist_space: str  # "rgb" or "hsv"
    hist_bins: tuple[int, ...]
    hist_compare: str  # one of histograms.COMPARISONS
    keypoint_score: str  # "crosscheck-l1-mean" or "ratio"
    ratio: float
    fusion: str  # "seed-formula" or "fitted"
    aggregation: str  # support aggregation of the fused score

    def to_dict(self) -> dict:
        return asdict(self)


SEED = Recipe(
    name="seed",
    size=224,
    ssim_gray="bgr",
    ssim_win=7,
    hist_space="rgb",
    hist_bins=(8,),
    hist_compare="correl",
    keypoint_score="crosscheck-l1-mean",
    ratio=1.0,
    fusion="seed-formula",
    aggregation="images",
)
DEFAULT = Recipe(
    name="default",
    size=None,
    ssim_gray="color",
    ssim_win=7,
    hist_space="hsv",
    hist_bins=(8, 3, 3),
    hist_compare="bhattacharyya",
    keypoint_score="ratio",
    ratio=0.8,
    fusion="fitted",
    aggregation="mean",
)
RECIPES = {"seed": SEED, "default": DEFAULT}


def color_histograms(images: np.ndarray, recipe: Recipe) -> np.ndarray:
    """The recipe's histogram of each image, normalized to sum 1 (float32 (N, B))."""
    if recipe.hist_space == "rgb":
        h = histograms.rgb_histograms(images, recipe.hist_bins[0])
    else:
        h = histograms.hsv_histograms(images, recipe.hist_bins)  # type: ignore[arg-type]
    return h / np.maximum(h.sum(axis=1, keepdims=True), 1)


class ClassicalScorer(PairwiseScorer):
    """Pairwise scores of the classical components over one pool of images (no vectors).

    Per image, once, for the components in use: working-size image, color histogram, SSIM
    grayscale, SIFT descriptors. Per ``pair_sim`` call: SSIM window statistics of the
    candidates once and of the queries in chunks, then the batched kernels.
    """

    def __init__(
        self,
        feats: np.ndarray,
        recipe: Recipe,
        components: tuple[str, ...],
        fusion: Fusion | None,
        query_chunk: int = 256,
        prepare_chunk: int = 256,
    ) -> None:
        super().__init__(recipe.aggregation)  # type: ignore[arg-type]
        self.recipe = recipe
        self.components = components
        self.fusion = fusion
        self.query_chunk = query_chunk
        # Wall-clock seconds spent per stage, for benchmarks ("prepare" and each component).
        self.seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        images = split_features(feats)
        hists, grays, descs = [], [], []
        for i in tqdm(
            range(0, len(images), prepare_chunk),
            desc="prepare images",
            unit="chunk",
            leave=False,
            mininterval=1,
        ):
            chunk = images[i : i + prepare_chunk]
            work = preprocess.seed_upsample(chunk, recipe.size) if recipe.size else chunk
            if "hist" in components:
                hists.append(color_histograms(work, recipe))
            if "ssim" in components:
                color = recipe.ssim_gray == "color"
                grays.append(work if color else preprocess.to_gray(work, recipe.ssim_gray))
            if "keypoints" in components:
                descs.append(keypoints.sift_descriptors(preprocess.to_gray(work, "rgb")))
        self.hists = np.concatenate(hists) if hists else None
        self.gray = np.concatenate(grays) if grays else None
        self.desc = keypoints.Descriptors.concat(descs) if descs else None
        self.win = recipe.ssim_win
        if self.gray is not None:
            try:
                self.win = ssim_kernels.largest_window(*self.gray.shape[1:3], recipe.ssim_win)
            except ValueError as e:
                raise UserError(str(e)) from None
        self.seconds["prepare"] = time.perf_counter() - t0

    def component_sim(self, name: str, q_idx: np.ndarray, s_idx: np.ndarray) -> np.ndarray:
        """(Q, S) raw score of one component, higher = more similar (not standardized)."""
        q_idx = np.asarray(q_idx, dtype=np.int64)
        s_idx = np.asarray(s_idx, dtype=np.int64)
        if name == "ssim":
            return self._ssim(q_idx, s_idx)
        if name == "hist":
            values = histograms.compare(
                self.hists, self.hists, self.recipe.hist_compare, q_idx, s_idx
            )
            return histograms.similarity(values, self.recipe.hist_compare)
        assert self.desc is not None
        if self.recipe.keypoint_score == "crosscheck-l1-mean":
            return -keypoints.crosscheck_l1_mean(self.desc, q_idx, s_idx)
        return keypoints.ratio_match_score(self.desc, q_idx, s_idx, self.recipe.ratio)

    def component_sims(self, q_idx: np.ndarray, s_idx: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for name in self.components:
            t0 = time.perf_counter()
            out[name] = self.component_sim(name, q_idx, s_idx)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return out

    def _ssim(self, q_idx: np.ndarray, s_idx: np.ndarray) -> np.ndarray:
        assert self.gray is not None
        cand = ssim_kernels.WindowStats(self.gray[s_idx], self.win)
        out = np.empty((len(q_idx), len(s_idx)), dtype=np.float64)
        for i in range(0, len(q_idx), self.query_chunk):
            q = ssim_kernels.WindowStats(self.gray[q_idx[i : i + self.query_chunk]], self.win)
            out[i : i + self.query_chunk] = ssim_kernels.ssim_cross(q, cand)
        return out

    def pair_sim(self, q_idx: np.ndarray, s_idx: np.ndarray) -> np.ndarray:
        sims = self.component_sims(q_idx, s_idx)
        if len(self.components) == 1:
            return sims[self.components[0]]
        if self.recipe.fusion == "seed-formula":
            # The study's (hist_corr + ssim - sift_distance) / 3; a pair without matches has
            # distance +inf and lands last.
            return (sims["hist"] + sims["ssim"] + sims["keypoints"]) / 3
        if self.fusion is None:
            raise UserError("the classical method must be fit on seen classes before scoring")
        return self.fusion.combine(sims)


def split_features(feats: np.ndarray) -> np.ndarray:
    """Features ``[H, W, pixels]`` -> uint8 images (N, H, W, 3)."""
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[1] <= _HEADER or len(feats) == 0:
        raise UserError(f"not classical-method features: shape {feats.shape}")
    height, width = int(feats[0, 0]), int(feats[0, 1])
    if feats.shape[1] != _HEADER + height * width * 3 or np.any(
        feats[:, :_HEADER] != feats[:1, :_HEADER]
    ):
        raise UserError("classical-method features of different image sizes cannot share a pool")
    return feats[:, _HEADER:].reshape(len(feats), height, width, 3).astype(np.uint8)


class ClassicalEmbedder(Embedder):
    """One or more classical components under a recipe (see the module docstring)."""

    def __init__(self, name: str, components: tuple[str, ...], recipe: str = "default") -> None:
        if recipe not in RECIPES:
            raise UserError(f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}")
        unknown = sorted(set(components) - set(COMPONENTS))
        if unknown or not components:
            raise ValueError(f"components must be a non-empty subset of {COMPONENTS}")
        self.recipe = RECIPES[recipe]
        self.components = tuple(c for c in COMPONENTS if c in components)
        fitted = self.recipe.fusion == "fitted" and len(self.components) > 1
        r = self.recipe
        self.spec = MethodSpec(
            name=name,
            # Features are the images themselves plus a histogram: their width depends on the
            # image size, so no fixed embedding dimension is declared.
            embedding_dim=0,
            input_size=r.size,
            normalization=(
                "each component standardized on seen-class pairs, weights fit on seen classes"
                if fitted
                else "study formula (hist + ssim - sift_l1) / 3"
                if len(self.components) > 1
                else "none"
            ),
            pairwise=True,
            support_aggregation=r.aggregation,  # type: ignore[arg-type]
            fits_on_seen=fitted,
        )
        self.fusion: Fusion | None = None
        self.fit_table: list[dict] = []
        self.fit_pool: dict = {}
        self.ratio_search: list[dict] = []

    def embed(self, images: np.ndarray) -> np.ndarray:
        """``[H, W, pixels]`` per image: the scorer derives every statistic from the pixels."""
        images = check_images(images)
        n, height, width, _ = images.shape
        if self.recipe.size is None and "ssim" in self.components and min(height, width) < 3:
            raise UserError(f"images of {height}x{width} are too small for SSIM (need 3x3)")
        header = np.broadcast_to(np.array([height, width], dtype=np.float32), (n, _HEADER))
        return np.concatenate([header, images.reshape(n, -1).astype(np.float32)], axis=1)

    def scorer(self, feats: np.ndarray, class_names: list[str]) -> ClassicalScorer:
        del class_names
        if self.spec.fits_on_seen and self.fusion is None:
            raise UserError(f"method {self.spec.name!r} must be fit on seen classes first")
        return ClassicalScorer(feats, self.recipe, self.components, self.fusion)

    def fit(
        self,
        seen: Split,
        class_names: list[str],
        per_class: int | None = None,
        pool_size: int = 2000,
        seed: int = 0,
    ) -> None:
        """Fit the fusion on a pool of seen-class training images (first images of each class).

        ``per_class`` defaults to ``pool_size`` spread over the seen classes (at least 20, the
        5 support + 15 query images an episode draws per class). With the ratio test, Lowe's
        ratio is fit too: the fusion is fit once per ``RATIO_CANDIDATES`` ratio and the ratio
        whose best seen-class top-1 is highest is kept (a tie keeps the recipe's ratio).
        """
        del class_names
        if not self.spec.fits_on_seen:
            return
        classes = np.unique(seen.labels)
        per = per_class or max(20, pool_size // max(len(classes), 1))
        idx = np.concatenate([np.flatnonzero(seen.labels == c)[:per] for c in classes])
        labels = seen.labels[idx]
        counts = np.bincount(labels)[classes]
        if len(classes) < 2 or counts.min() < 20:
            raise UserError(
                "fitting the classical fusion needs at least 2 seen classes with 20 training "
                f"images each; got {len(classes)} classes, smallest has {counts.min()}"
            )
        feats = np.concatenate(
            [self.embed(seen.images[idx[i : i + 256]]) for i in range(0, len(idx), 256)]
        )
        base = RECIPES[self.recipe.name]  # unfitted: a refit starts over from its ratio
        scorer = ClassicalScorer(feats, base, self.components, None)
        pool = np.arange(len(idx))
        sims = {
            name: scorer.component_sim(name, pool, pool)
            for name in tqdm(self.components, desc="fit: seen-pool scores", leave=False)
        }
        search = "keypoints" in sims and base.keypoint_score == "ratio"
        ratios = RATIO_CANDIDATES if search else (base.ratio,)
        fits = []
        for ratio in tqdm(ratios, desc="fit: SIFT ratio", leave=False, disable=not search):
            cand = sims  # the components as scored at the recipe's own ratio
            if ratio != base.ratio:
                assert scorer.desc is not None
                score = keypoints.ratio_match_score(scorer.desc, pool, pool, ratio)
                cand = {**sims, "keypoints": score}  # same order of components
            fusion, table = fit_fusion(cand, labels, seed=seed)
            fits.append((ratio, fusion, table, max(r["seen_top1"] for r in table)))
        best = max(fits, key=lambda f: (f[3], -abs(f[0] - base.ratio)))
        self.recipe = replace(base, ratio=best[0])
        self.fusion, self.fit_table = best[1], best[2]
        self.ratio_search = [{"ratio": f[0], "seen_top1": f[3]} for f in fits] if search else []
        self.fit_pool = {
            "images": len(idx),
            "classes": len(classes),
            "per_class": int(per),
            "seed": seed,
        }

    def describe(self) -> dict:
        out: dict = {
            "spec": self.spec.to_dict(),
            "recipe": self.recipe.to_dict(),
            "components": list(self.components),
        }
        if self.fusion is not None:
            best = max(self.fit_table, key=lambda r: r["seen_top1"]) if self.fit_table else None
            out["fusion"] = {
                **self.fusion.to_dict(),
                "fit_pool": self.fit_pool,
                "seen_top1": best["seen_top1"] if best else None,
                "ratio_search": self.ratio_search,
            }
        return out


def _factory(name: str, components: tuple[str, ...], help: str):
    @register(name, help=help)
    def create(arg: str | None = None, *, recipe: str = "default") -> ClassicalEmbedder:
        if arg:
            raise UserError(f"{name} takes no :ARG; choose its pipeline with --recipe")
        return ClassicalEmbedder(name, components, recipe)

    return create


_factory(
    "classical",
    COMPONENTS,
    "SSIM + color histogram + SIFT keypoints, fused (study's method 4; --recipe seed: its formula)",
)
_factory("ssim", ("ssim",), "SSIM alone (numba, 7x7 window; per channel, seed: grayscale)")
_factory("hist", ("hist",), "color histogram alone (HSV Bhattacharyya; seed: RGB correlation)")
_factory("keypoints", ("keypoints",), "SIFT keypoint matching alone (ratio test; seed: mean L1)")
