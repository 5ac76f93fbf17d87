"""Loading an open_clip model, its uint8-in image module, and its text encoder.

``load_clip`` resolves the weights (``imsim.clip.weights``), builds the model with
``open_clip.create_model`` (tag, file and random weights all take that one path), and attaches
the preprocessing the weights were trained with. ``ClipImageModule`` is the image side as one
torch module: uint8 NHWC in, preprocessing, image tower, L2 normalization (or, for the study's
recipe, the raw ``get_image_features`` output); the CLIP methods run it through their runner
(``imsim.methods.base.NetworkEmbedder``) like every other network. Text is encoded here.
"""

from __future__ import annotations

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from imsim.clip.preprocess import ClipPreprocess
from imsim.clip.weights import Weights, resolve
from imsim.errors import UserError


class ClipImageModule(torch.nn.Module):
    """uint8 (N, H, W, 3) RGB -> float32 (N, D) L2-normalized CLIP image embeddings
    (``normalize=False``: the raw image features, what the study's prototypes average)."""

    def __init__(
        self, visual: torch.nn.Module, preprocess_cfg: dict, normalize: bool = True
    ) -> None:
        super().__init__()
        self.preprocess = ClipPreprocess(preprocess_cfg)
        self.visual = visual
        self.normalize = normalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.visual(self.preprocess(images))
        return F.normalize(x, dim=-1) if self.normalize else x


class LoadedClip:
    """An open_clip model in eval mode with its image module and a cached text encoder.

    Text embeddings are kept in memory per distinct text, so each class name or prompt is
    encoded once per process (never cached on disk).
    """

    def __init__(self, model: torch.nn.Module, weights: Weights, device: str) -> None:
        self.model = model.eval().requires_grad_(False)  # frozen: never trained here
        self.weights = weights
        self.device = device
        self.preprocess_cfg = dict(model.visual.preprocess_cfg)
        self.image = ClipImageModule(model.visual, self.preprocess_cfg).to(device).eval()
        self._tokenizer = None
        self._text_cache: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            probe = torch.zeros(1, 8, 8, 3, dtype=torch.uint8, device=device)
            self.embedding_dim = int(self.image(probe).shape[1])

    def image_module(self, normalize: bool = True) -> ClipImageModule:
        """The image side as one module: ``image``, or one sharing its tower that returns the raw
        ``get_image_features`` outputs (``normalize=False``)."""
        if normalize:
            return self.image
        return ClipImageModule(self.image.visual, self.preprocess_cfg, normalize=False).eval()

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        if self._tokenizer is None:
            try:
                self._tokenizer = open_clip.get_tokenizer(self.weights.model)
            except Exception as e:  # hub tokenizers (SigLIP, ...) need a download
                raise UserError(f"cannot load the tokenizer of {self.weights.model}: {e}") from e
        return self._tokenizer(texts)

    def embed_text(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> float32 (N, D) L2-normalized embeddings, each distinct text encoded once."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            with torch.inference_mode():
                tokens = self._tokenize(chunk).to(self.device)
                emb = self.model.encode_text(tokens, normalize=True).float().cpu().numpy()
            self._text_cache.update(zip(chunk, emb, strict=True))
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return np.stack([self._text_cache[t] for t in texts]).astype(np.float32)

    def describe(self) -> dict:
        w = self.weights
        return {
            "clip_model": w.model,
            "pretrained": w.pretrained,
            "weights_source": w.source,
            "weights_path": w.path,
            "random_weights": w.random,
            "quick_gelu": w.quick_gelu,
            "preprocess": {k: self.preprocess_cfg.get(k) for k in sorted(self.preprocess_cfg)},
            "note": w.note,
        }


def load_clip(
    model: str = "ViT-B-32", pretrained: str = "openai", device: str = "cpu"
) -> LoadedClip:
    """Create an open_clip model from ``--clip-model`` / ``--pretrained`` (tag, file or none)."""
    weights = resolve(model, pretrained)
    kwargs: dict = {"device": device, "force_quick_gelu": weights.quick_gelu}
    if weights.preprocess:
        kwargs["force_preprocess_cfg"] = weights.preprocess
    if weights.source in ("tag", "file"):
        kwargs["pretrained"] = weights.path
    elif weights.random:  # nothing pretrained, not even a tower's default weights
        kwargs.update(load_weights=False, pretrained_image=False, pretrained_text=False)
    try:
        # Random weights are seeded, so every method and run with --pretrained none gets the
        # same network; the global RNG state is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = open_clip.create_model(weights.model, **kwargs)
    except Exception as e:  # open_clip raises RuntimeError, ValueError, KeyError, OSError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f" from {weights.path}" if weights.path else ""
        raise UserError(
            f"could not load {weights.model}{where}: {first[:300]} (does the file hold this "
            f"model's weights? pick the matching --clip-model)"
        ) from e
    return LoadedClip(net, weights, device)
