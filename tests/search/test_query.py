"""Query vectors: image, text and fused queries, ranked as computed by hand."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imsim.errors import UserError
from imsim.methods import create_method
from search.gallery import open_gallery
from search.index import build_index, load_index
from search.query import RequestTooLarge, Searcher, decode_upload, fuse
from tests.search.helpers import ColorWordsEmbedder, save_png, solid

R2 = 1 / np.sqrt(2)


@pytest.fixture
def colors_index(tmp_path: Path, color_words: type) -> Path:
    """Four solid-color images indexed with the color-words method."""
    for name, rgb in {
        "red": (255, 0, 0),
        "blue": (0, 0, 255),
        "purple": (255, 0, 255),
        "green": (0, 255, 0),
    }.items():
        save_png(tmp_path / "g" / name / "0.png", solid(rgb))
    build_index(
        open_gallery(str(tmp_path / "g")),
        tmp_path / "ix",
        create_method("color-words"),
        "color-words",
        {},
    )
    return tmp_path / "ix"


def _ranked(searcher: Searcher, q: np.ndarray) -> list[tuple[str, float]]:
    return [(h.label, round(h.score, 3)) for h in searcher.search(q, k=4)]


def test_fused_ranking_equals_hand_computed(colors_index: Path) -> None:
    s = Searcher(load_index(colors_index))
    assert s.has_text
    red = solid((255, 0, 0))
    # w = 0.8: q = normalize(0.8 (1,0,0) + 0.2 (0,0,1)) = (0.9701, 0, 0.2425); scores against
    # red (1,0,0), purple (1,0,1)/sqrt2, blue (0,0,1), green (0,1,0):
    assert _ranked(s, s.query_vector(image=red, text="blue", weight=0.8)) == [
        ("red", 0.970),
        ("purple", 0.857),
        ("blue", 0.243),
        ("green", 0.0),
    ]
    # w = 0.5: q = (1,0,1)/sqrt2 -> purple 1, then blue and red tie at 0.707 (lower row first).
    assert _ranked(s, s.query_vector(image=red, text="blue", weight=0.5)) == [
        ("purple", 1.0),
        ("blue", 0.707),
        ("red", 0.707),
        ("green", 0.0),
    ]
    # w = 0.2 leans to the text: blue first.
    assert [r[0] for r in _ranked(s, s.query_vector(image=red, text="blue", weight=0.2))][:2] == [
        "blue",
        "purple",
    ]


def test_text_only_and_image_only(colors_index: Path) -> None:
    s = Searcher(load_index(colors_index))
    # rows are in key order (blue, green, purple, red): the tie at 0.707 goes to blue
    assert _ranked(s, s.query_vector(text="purple")) == [
        ("purple", 1.0),
        ("blue", 0.707),
        ("red", 0.707),
        ("green", 0.0),
    ]
    assert _ranked(s, s.query_vector(image=solid((0, 250, 0))))[0] == ("green", 1.0)
    # the weight applies only when both are given; an empty text is no text
    a = s.query_vector(image=solid((0, 250, 0)), text="   ", weight=0.1)
    np.testing.assert_allclose(a, s.query_vector(image=solid((0, 250, 0))))


def test_item_query_uses_the_stored_vector(colors_index: Path) -> None:
    index = load_index(colors_index)
    s = Searcher(index, embedder=ColorWordsEmbedder())
    q = s.query_vector(item="purple/0.png", text="red", weight=0.5)
    np.testing.assert_allclose(
        q, fuse(index.vectors[index.position("purple/0.png")], np.array([1.0, 0, 0]), 0.5)
    )
    with pytest.raises(UserError, match="not an item"):
        s.query_vector(item="nope.png")


def test_min_score_only_when_asked(colors_index: Path) -> None:
    s = Searcher(load_index(colors_index))
    q = s.query_vector(text="red")
    assert len(s.search(q, k=10)) == 4
    assert [h.label for h in s.search(q, k=10, min_score=0.5)] == ["red", "purple"]


def test_fuse_rejects_bad_input() -> None:
    with pytest.raises(UserError, match="image, a text"):
        fuse(None, None, 0.5)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        fuse(np.ones(3), np.ones(3), 1.5)
    with pytest.raises(UserError, match="cancel"):
        fuse(np.array([1.0, 0, 0]), np.array([-1.0, 0, 0]), 0.5)


def test_image_only_method_refuses_text(shapes_folder: Path, tmp_path: Path) -> None:
    build_index(
        open_gallery(str(shapes_folder)), tmp_path / "ix", create_method("pixels"), "pixels", {}
    )
    s = Searcher(load_index(tmp_path / "ix"))
    assert not s.has_text
    with pytest.raises(UserError, match="no text encoder"):
        s.query_vector(text="a red circle")


def test_model_mismatch_is_detected(colors_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ColorWordsEmbedder, "describe", lambda self: {"weights": "other"})
    s = Searcher(load_index(colors_index))
    with pytest.raises(UserError, match="rebuild the index"):
        s.query_vector(text="red")


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_upload() -> None:
    img = decode_upload(_png((40, 20)), 16, max_pixels=10_000)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert tuple(img[8, 8]) == (10, 20, 30)
    with pytest.raises(RequestTooLarge, match="200x100"):
        decode_upload(_png((200, 100)), 16, max_pixels=10_000)
    with pytest.raises(UserError, match="not an image"):
        decode_upload(b"hello, world", 16, max_pixels=10_000)
    with pytest.raises(UserError, match="corrupt or truncated"):
        decode_upload(_png((64, 64))[:60], 16, max_pixels=10_000)
    with pytest.raises(UserError, match="empty"):
        decode_upload(b"", 16, max_pixels=10_000)
