"""Queries against an index: by image, by text, or both fused with an explicit weight.

Every query becomes one L2-normalized vector ``q`` in the method's embedding space; its score
against a gallery item is the cosine similarity ``g . q`` (gallery rows are L2-normalized). An
image and a text are fused as ``q = normalize(w * normalize(image) + (1 - w) * normalize(text))``
with ``w`` the image weight; an empty text is no text, and results are filtered by a minimum
score only when one is given.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from imsim.data.images import ImageError, ImageTooLarge, decode_image
from imsim.errors import UserError
from imsim.methods import create_method
from imsim.methods.base import Embedder, l2_normalize
from imsim.methods.registry import options_for
from search.backends import Backend, make_backend
from search.gallery import display_key
from search.index import Index, _strip_runtime, method_record

MAX_TEXT = 1000  # characters


class RequestTooLarge(UserError):
    """An upload larger than the server accepts (HTTP 413)."""


@dataclass(frozen=True)
class Hit:
    rank: int
    row: int
    score: float
    key: str
    label: str | None

    def to_dict(self) -> dict[str, Any]:
        """The hit as JSON-safe values (a key that is not valid UTF-8 shown escaped)."""
        return {**asdict(self), "key": display_key(self.key)}


def fuse(image: np.ndarray | None, text: np.ndarray | None, weight: float) -> np.ndarray:
    """The query vector of an image embedding, a text embedding, or both (image weight ``w``)."""
    if not 0.0 <= weight <= 1.0:
        raise UserError(f"the image weight must be in [0, 1], got {weight}")
    parts = [(v, w) for v, w in ((image, weight), (text, 1.0 - weight)) if v is not None]
    if not parts:
        raise UserError("a query needs an image, a text, or both")
    if len(parts) == 1:
        return l2_normalize(np.asarray(parts[0][0], dtype=np.float32).reshape(1, -1))[0]
    q = sum(w * l2_normalize(np.asarray(v, dtype=np.float32).reshape(1, -1))[0] for v, w in parts)
    if np.linalg.norm(q) < 1e-6:
        raise UserError("the image and text embeddings cancel out at this weight; change --weight")
    return l2_normalize(q.reshape(1, -1))[0]


def decode_upload(
    data: bytes, size: int, max_pixels: int | None = None, name: str = "the uploaded image"
) -> np.ndarray:
    """Untrusted image bytes -> uint8 (size, size, 3) under the toolkit's one decoding policy
    (``imsim.data.images``), or a UserError saying what is wrong (RequestTooLarge: too many
    pixels)."""
    try:
        return decode_image(data, size, name=name, max_pixels=max_pixels)
    except ImageTooLarge as e:
        raise RequestTooLarge(str(e)) from None
    except ImageError as e:
        raise UserError(str(e)) from None


class Searcher:
    """An index, the method that built it (created on first use) and a search backend."""

    def __init__(
        self,
        index: Index,
        embedder: Embedder | None = None,
        backend: str = "exact",
        device: str = "cpu",
        nprobe: int = 16,
        nlist: int | None = None,
    ) -> None:
        self.index = index
        self._embedder = embedder
        self.device = device
        self.backend: Backend = make_backend(backend, index.vectors, nlist=nlist, nprobe=nprobe)
        self._lock = threading.Lock()  # one embedding at a time: methods need not be reentrant

    @property
    def embedder(self) -> Embedder:
        """The indexing method, re-created from the manifest and checked against it."""
        with self._lock:
            if self._embedder is None:
                m = self.index.method
                # The recorded model options and this searcher's device, where the method
                # declares them (older manifests recorded every model flag).
                options = options_for(m["item"], {**m["options"], "device": self.device})
                emb = create_method(m["item"], **options)
                got = method_record(m["item"], m["options"], emb)
                if _strip_runtime(got["describe"]) != m["describe"]:
                    raise UserError(
                        f"method {m['item']!r} as installed here differs from the one that built "
                        f"{self.index.path} (weights or settings changed); rebuild the index"
                    )
                self._embedder = emb
            return self._embedder

    @property
    def has_text(self) -> bool:
        return bool(self.index.method.get("text"))

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, 3) image, resized as the gallery was, to its embedding."""
        from search.gallery import resize_array

        img = resize_array(np.array(image, dtype=np.uint8), self.index.image_size)
        emb = self.embedder
        with self._lock:
            return np.asarray(emb.embed(img[None]), dtype=np.float32)[0]

    def embed_text(self, text: str) -> np.ndarray:
        if len(text) > MAX_TEXT:
            raise UserError(f"the text has {len(text)} characters; the limit is {MAX_TEXT}")
        emb = self.embedder
        with self._lock:
            return np.asarray(emb.embed_text([text]), dtype=np.float32)[0]

    def query_vector(
        self,
        image: np.ndarray | None = None,
        item: str | None = None,
        text: str | None = None,
        weight: float = 0.5,
    ) -> np.ndarray:
        """Fuse whatever was given: an image array, an indexed item's key, a text."""
        if image is not None and item is not None:
            raise UserError("give either an image or a gallery item, not both")
        text = text.strip() if text else None
        if text and not self.has_text:
            raise UserError(
                f"method {self.index.method['name']!r} has no text encoder; query with an image "
                "or index with a CLIP method"
            )
        img_vec = None
        if image is not None:
            img_vec = self.embed_image(image)
        elif item is not None:
            img_vec = self.index.vectors[self.index.position(item)]
        txt_vec = self.embed_text(text) if text else None
        return fuse(img_vec, txt_vec, weight)

    def search(self, q: np.ndarray, k: int = 10, min_score: float | None = None) -> list[Hit]:
        """The top ``k`` gallery items by cosine similarity, best first (ties: lower row first)."""
        if k < 1:
            raise UserError(f"k must be >= 1, got {k}")
        if min_score is not None and not math.isfinite(min_score):
            raise UserError(f"the minimum score must be a finite number, got {min_score}")
        scores, rows = self.backend.search(q.reshape(1, -1), min(k, len(self.index)))
        hits = []
        for s, r in zip(scores[0], rows[0], strict=True):
            if r < 0 or not np.isfinite(s) or (min_score is not None and s < min_score):
                continue
            it = self.index.items[int(r)]
            hits.append(Hit(len(hits) + 1, int(r), float(s), it.key, it.label))
        return hits
