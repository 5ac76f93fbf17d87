"""``clip`` and ``clip-text``: frozen open_clip embeddings, image only or fused with class names.

``clip`` (the study's method 5): cosine similarity of a query to the normalized mean of a
class's support embeddings (the prototype). The default averages unit embeddings; ``--recipe
seed`` averages the raw ``get_image_features`` outputs, as the study did (for both methods).

``clip-text`` (method 6) adds the similarity of the query to a text embedding of the class
name, for the classes being ranked (the unseen ones at evaluation):
- ``--recipe seed``: the study's rule, the mean of the prototype and text similarities (its
  distance was the mean of the two ``1 - cos``), text = the bare class name ("willow_tree").
- default: names cleaned ("willow tree"), CLIP's CIFAR prompt templates averaged, and the
  weight of the text term chosen by few-shot episodes on seen classes only (``fit``).

Models, weights and preprocessing: ``imsim.clip``. With ``--pretrained none`` the weights are
random, and every result carries ``[random-weights]`` in its method name.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from imsim.clip import ClipImageModule, LoadedClip, load_clip, unavailable
from imsim.data.types import Split
from imsim.errors import UserError
from imsim.methods.base import MethodSpec, NetworkEmbedder, embed_all, l2_normalize
from imsim.methods.registry import register
from imsim.protocols import Episodes
from imsim.protocols.seed import SHOTS
from imsim.scoring import CosineScorer

# CLIP's zero-shot prompts for CIFAR-10/100 (openai/CLIP, data/prompts.md): photos of low
# resolution, like the 32x32 images evaluated here.
CIFAR_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)
TEXT_WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))  # candidates for ``fit``
SEED_TEXT_WEIGHT = 0.5
RANDOM_TAG = "[random-weights]"


def clean_name(name: str) -> str:
    """A class folder name as words: "willow_tree" -> "willow tree"."""
    return " ".join(name.replace("_", " ").split())


class ClipTextScorer(CosineScorer):
    """Prototype image similarity fused with the query's similarity to each ranked class's text.

    ``class_text`` maps the class indices being ranked to their (C, D) text embeddings, so only
    those classes' names are ever used. ``pair_sim`` (image to image, for retrieval) has no
    class to name and stays image only.
    """

    def __init__(
        self,
        feats: np.ndarray,
        class_text: Callable[[np.ndarray], np.ndarray],
        text_weight: float,
        raw_prototypes: bool = False,
    ) -> None:
        super().__init__(feats, "prototype", raw_prototypes)
        self.class_text = class_text
        self.text_weight = float(text_weight)

    def class_sim(
        self, q_idx: np.ndarray, s_idx: np.ndarray, s_labels: np.ndarray, classes: np.ndarray
    ) -> np.ndarray:
        image = super().class_sim(q_idx, s_idx, s_labels, classes)
        text = self.feats[q_idx] @ self.class_text(np.asarray(classes)).T
        return (1.0 - self.text_weight) * image + self.text_weight * text


class ClipEmbedder(NetworkEmbedder):
    """Frozen open_clip image embeddings (L2-normalized), classes scored by prototype; the image
    module runs on the method's runner (``NetworkEmbedder``), text on ``LoadedClip``."""

    base_name = "clip"
    text_encoder = True

    def __init__(self, clip: LoadedClip, batch_size: int = 256, recipe: str = "default") -> None:
        if recipe not in ("default", "seed"):
            raise UserError(f"unknown recipe {recipe!r} for {self.base_name}; use default or seed")
        self.clip = clip
        self.module = clip.image
        self.device = clip.device
        self.batch_size = batch_size
        # seed: the study's prototype, the mean of raw get_image_features outputs (embed returns
        # them raw; the scorer normalizes); default: the mean of unit embeddings.
        self.recipe = recipe
        cfg = clip.preprocess_cfg
        name = self.base_name + (RANDOM_TAG if clip.weights.random else "")
        self.spec = MethodSpec(
            name=name,
            embedding_dim=clip.embedding_dim,
            input_size=int(clip.image.preprocess.output_size[0]),
            normalization=(
                f"open_clip preprocess in the module ({cfg.get('resize_mode')} resize, "
                f"{cfg.get('interpolation')}, mean/std), then "
                + ("raw (prototype = mean of raw features)" if recipe == "seed" else "unit L2 norm")
            ),
            support_aggregation="prototype",
        )

    def runner_module(self) -> ClipImageModule:
        """The seed recipe's default runner returns the raw features its prototypes average (a
        backend given with ``--backend`` runs the exported, normalized graph)."""
        return self.clip.image_module(normalize=self.recipe != "seed")

    def scorer(self, feats: np.ndarray, class_names: list[str]) -> CosineScorer:
        del class_names
        return CosineScorer(feats, "prototype", raw_prototypes=self.recipe == "seed")

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.clip.embed_text(list(texts))

    def describe(self) -> dict:
        return {"spec": self.spec.to_dict(), **self.clip.describe()}


class ClipTextEmbedder(ClipEmbedder):
    """``clip`` plus class-name text similarity; see the module docstring for the recipes."""

    base_name = "clip-text"

    def __init__(
        self,
        clip: LoadedClip,
        recipe: str = "default",
        batch_size: int = 256,
        fit_images_per_class: int = 20,
        fit_episodes: int = 300,
    ) -> None:
        super().__init__(clip, batch_size, recipe)
        self.spec = MethodSpec(**{**self.spec.to_dict(), "fits_on_seen": recipe == "default"})
        self.templates = ("{}",) if recipe == "seed" else CIFAR_TEMPLATES
        self.text_weight: float | None = SEED_TEXT_WEIGHT if recipe == "seed" else None
        self.fit_images_per_class = fit_images_per_class
        self.fit_episodes = fit_episodes
        self.fit_report: dict | None = None
        self._class_cache: dict[str, np.ndarray] = {}

    def prompts(self, class_name: str) -> list[str]:
        """The texts averaged into one class embedding."""
        name = class_name if self.recipe == "seed" else clean_name(class_name)
        return [t.format(name) for t in self.templates]

    def class_embeddings(self, class_names: list[str]) -> np.ndarray:
        """(C, D) unit text embeddings, one per name: its prompts' embeddings averaged."""
        for name in class_names:
            if name not in self._class_cache:
                mean = self.embed_text(self.prompts(name)).mean(axis=0, keepdims=True)
                self._class_cache[name] = l2_normalize(mean)[0]
        return np.stack([self._class_cache[n] for n in class_names])

    def _lookup(self, class_names: list[str]) -> Callable[[np.ndarray], np.ndarray]:
        return lambda classes: self.class_embeddings([class_names[int(c)] for c in classes])

    def scorer(self, feats: np.ndarray, class_names: list[str]) -> ClipTextScorer:
        if self.text_weight is None:
            raise RuntimeError("clip-text chooses its text weight on seen classes: call fit first")
        return ClipTextScorer(
            feats, self._lookup(class_names), self.text_weight, self.recipe == "seed"
        )

    def fit(self, seen: Split, class_names: list[str]) -> None:
        """Choose the text weight by episodes on seen-class images and names only.

        A fixed sample of ``fit_images_per_class`` training images per seen class is embedded;
        every candidate weight is scored on the same ``fit_episodes`` episodes (the evaluation's
        5 shots, up to 10 ways and 15 queries), and the best wins (ties: nearest to 0.5).
        """
        if self.recipe == "seed":
            return
        classes = np.unique(seen.labels)
        if len(classes) < 2:
            raise UserError("clip-text needs at least 2 seen classes to choose its text weight")
        rng = np.random.default_rng(0)
        pick = np.sort(
            np.concatenate(
                [
                    rng.choice(idx, min(len(idx), self.fit_images_per_class), replace=False)
                    for idx in (np.flatnonzero(seen.labels == c) for c in classes)
                ]
            )
        )
        labels = seen.labels[pick]
        queries = min(15, min(int((labels == c).sum()) for c in classes) - SHOTS)
        if queries < 1:
            raise UserError(
                f"clip-text needs more than {SHOTS} training images per seen class to fit"
            )
        feats = embed_all(self, seen.images[pick], desc="fit clip-text", batch_size=self.batch_size)
        ways = min(10, len(classes))
        lookup = self._lookup(class_names)
        sampler = Episodes(
            ways=ways, shots=SHOTS, queries=queries, episodes=self.fit_episodes, seed=0
        )
        accuracy = []
        for w in TEXT_WEIGHTS:
            accs, _ = sampler.accuracies(
                ClipTextScorer(feats, lookup, w), labels, tuple(int(c) for c in classes)
            )
            accuracy.append(float(accs.mean()))
        best = max(
            range(len(TEXT_WEIGHTS)), key=lambda i: (accuracy[i], -abs(TEXT_WEIGHTS[i] - 0.5))
        )
        self.text_weight = TEXT_WEIGHTS[best]
        self.fit_report = {
            "chosen_on": "seen classes (train split)",
            "n_classes": len(classes),
            "images_per_class": self.fit_images_per_class,
            "ways": ways,
            "shots": SHOTS,
            "queries": queries,
            "episodes": self.fit_episodes,
            "weights": list(TEXT_WEIGHTS),
            "seen_top1": [round(a, 5) for a in accuracy],
        }

    def describe(self) -> dict:
        return {
            **super().describe(),
            "recipe": self.recipe,
            "class_text": "bare class name" if self.recipe == "seed" else "cleaned name",
            "templates": list(self.templates),
            "text_weight": self.text_weight,
            "text_weight_fit": self.fit_report,
        }


def _no_arg(name: str, arg: str | None) -> None:
    if arg:
        raise UserError(f"{name} takes no :ARG; choose weights with --pretrained TAG|PATH|none")


@register("clip", available=unavailable, help="CLIP image embeddings, prototype (--clip-model)")
def create_clip(
    arg: str | None = None,
    *,
    clip_model: str = "ViT-B-32",
    pretrained: str = "openai",
    device: str = "cpu",
    batch_size: int = 256,
    recipe: str = "default",
) -> ClipEmbedder:
    _no_arg("clip", arg)
    return ClipEmbedder(load_clip(clip_model, pretrained, device), batch_size, recipe)


@register("clip-text", available=unavailable, help="CLIP image + class-name text (--recipe)")
def create_clip_text(
    arg: str | None = None,
    *,
    clip_model: str = "ViT-B-32",
    pretrained: str = "openai",
    device: str = "cpu",
    batch_size: int = 256,
    recipe: str = "default",
) -> ClipTextEmbedder:
    _no_arg("clip-text", arg)
    return ClipTextEmbedder(load_clip(clip_model, pretrained, device), recipe, batch_size)
