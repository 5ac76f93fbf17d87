"""Helpers for the search tests: a small method with a text encoder, and image writers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imsim.errors import UserError
from imsim.methods.base import Embedder, MethodSpec, check_images, l2_normalize

# Words of the color-words method's text encoder and where they point in its RGB space.
COLOR_WORDS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "purple": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}


class ColorWordsEmbedder(Embedder):
    """A method with a text encoder whose outputs are easy to compute by hand: an image is its
    L2-normalized mean RGB color, a text is the L2-normalized RGB vector of its color word."""

    text_encoder = True

    def __init__(self) -> None:
        self.spec = MethodSpec(name="color-words", embedding_dim=3)

    def embed(self, images: np.ndarray) -> np.ndarray:
        check_images(images)
        return l2_normalize(images.reshape(len(images), -1, 3).mean(axis=1) + 1e-3)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        unknown = [t for t in texts if t not in COLOR_WORDS]
        if unknown:
            raise UserError(f"unknown color words {unknown}")
        return l2_normalize(np.array([COLOR_WORDS[t] for t in texts], dtype=np.float32))


def solid(rgb: tuple[int, int, int], size: int = 16) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (size, size, 3)).copy()


def save_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread; yields its URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
