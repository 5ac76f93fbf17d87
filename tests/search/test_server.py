"""The HTTP API: searches by upload, JSON and gallery item; bad requests get 4xx JSON errors."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
import httpx
from fastapi.testclient import TestClient

from imsim.methods import create_method
from search.gallery import FolderGallery, open_gallery
from search.index import build_index, load_index
from search.query import Searcher
from search.server import Limits, create_app
from tests.search.helpers import ColorWordsEmbedder, save_png, serving, solid

LIMITS = Limits(max_body_bytes=200_000, max_pixels=250_000, max_k=50)


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def pixels_index(shapes_folder: Path, tmp_path: Path) -> Path:
    build_index(
        open_gallery(str(shapes_folder)), tmp_path / "ix", create_method("pixels"), "pixels", {}
    )
    return tmp_path / "ix"


@pytest.fixture
def client(pixels_index: Path) -> TestClient:
    return TestClient(create_app(Searcher(load_index(pixels_index)), LIMITS))


def test_page_and_info(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="results"' in page.text
    info = client.get("/api/info").json()
    assert info["items"] == 60 and info["method"] == "pixels" and info["text"] is False
    items = client.get("/api/items?n=5&seed=1").json()
    assert len(items) == 5 and {"row", "key", "label"} <= set(items[0])
    thumb = client.get(f"/api/items/{items[0]['row']}/image")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(thumb.content)).size == (32, 32)
    assert client.get("/api/items/999/image").status_code == 400


def test_upload_finds_the_same_image(client: TestClient, shapes_folder: Path) -> None:
    index = client.app.state.service.searcher.index  # type: ignore[attr-defined]
    key = index.items[17].key
    data = (shapes_folder / key).read_bytes()
    r = client.post("/search", files={"image": ("q.png", data, "image/png")}, data={"k": "5"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 5
    top = body["results"][0]
    assert (top["row"], top["key"], top["label"]) == (17, key, key.split("/")[0])
    assert top["score"] == pytest.approx(1.0, abs=1e-5)
    assert body["query"] == {
        "image": True,
        "item": None,
        "text": None,
        "weight": None,
        "k": 5,
        "min_score": None,
    }
    # the same through the JSON API
    r2 = client.post("/search", json={"image_base64": base64.b64encode(data).decode(), "k": 5})
    assert r2.status_code == 200 and r2.json()["results"] == body["results"]
    # and by gallery item, with a threshold
    r3 = client.post("/search", json={"item": 17, "k": 5, "min_score": 0.999})
    assert [h["row"] for h in r3.json()["results"]] == [17]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"files": {"image": ("x.png", b"GIF89a-not-really", "image/png")}}, 400, "not an image"),
        ({"files": {"image": ("x.txt", b"hello world", "text/plain")}}, 400, "not an image"),
        ({"json": {"image_base64": "%%%"}}, 400, "base64"),
        ({"json": {"k": 5}}, 400, "image, a text"),
        ({"json": {"item": 0, "k": 0}}, 400, "k must be between"),
        ({"json": {"item": 0, "k": "many"}}, 400, "integer"),
        ({"json": {"item": 0, "k": 2.5}}, 400, "integer"),
        ({"json": {"item": True}}, 400, "integer"),
        ({"json": {"item": 0, "weight": "nan", "text": "x"}}, 400, "finite"),
        ({"json": {"item": 0, "colour": "red"}}, 400, "unknown field"),
        ({"json": {"item": 0, "text": "a red circle"}}, 400, "no text encoder"),
        ({"json": {"item": 1000}}, 400, "no item"),
        ({"json": [1, 2]}, 400, "object"),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "valid JSON",
        ),
        ({"content": b"raw", "headers": {"content-type": "image/png"}}, 400, "multipart"),
        (
            {"content": b"x" * 300_000, "headers": {"content-type": "application/json"}},
            413,
            "limit",
        ),
    ],
)
def test_bad_requests_get_4xx_json(
    client: TestClient, kwargs: dict, status: int, message: str
) -> None:
    r = client.post("/search", **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_corrupt_and_huge_uploads(client: TestClient) -> None:
    good = png_bytes(solid((200, 30, 30), 64))
    r = client.post("/search", files={"image": ("t.png", good[: len(good) // 2], "image/png")})
    assert r.status_code == 400 and "corrupt" in r.json()["error"]
    # 600 x 600 = 360,000 pixels, over the 250,000 limit, yet a small file
    big = png_bytes(solid((1, 2, 3), 600))
    r = client.post("/search", files={"image": ("b.png", big, "image/png")})
    assert r.status_code == 413 and "600x600" in r.json()["error"]
    # a body over the byte limit is refused before it is parsed, also when sent in chunks
    blob = b"\0" * 300_000
    r = client.post("/search", files={"image": ("h.png", blob, "image/png")})
    assert r.status_code == 413
    r = client.post(
        "/search",
        content=iter([blob[:150_000], blob[150_000:]]),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 413


def test_text_and_fused_queries_over_http(tmp_path: Path, color_words: type) -> None:
    for name, rgb in {"red": (255, 0, 0), "blue": (0, 0, 255), "purple": (255, 0, 255)}.items():
        save_png(tmp_path / "g" / name / "0.png", solid(rgb))
    build_index(
        open_gallery(str(tmp_path / "g")), tmp_path / "ix", ColorWordsEmbedder(), "color-words", {}
    )
    client = TestClient(create_app(Searcher(load_index(tmp_path / "ix")), LIMITS))
    assert client.get("/api/info").json()["text"] is True
    r = client.post("/search", data={"text": "blue", "k": "3"})
    assert [h["label"] for h in r.json()["results"]] == ["blue", "purple", "red"]
    red = png_bytes(solid((255, 0, 0)))
    r = client.post(
        "/search",
        files={"image": ("r.png", red, "image/png")},
        data={"text": "blue", "weight": "0.8", "k": "3"},
    )
    body = r.json()
    assert body["query"]["weight"] == 0.8 and body["query"]["text"] == "blue"
    assert [(h["label"], round(h["score"], 3)) for h in body["results"]] == [
        ("red", 0.970),
        ("purple", 0.857),
        ("blue", 0.243),
    ]
    # an empty text box is no text: the image alone decides, and no weight is applied
    r = client.post(
        "/search",
        files={"image": ("r.png", red, "image/png")},
        data={"text": "", "weight": "0.1", "k": "3"},
    )
    assert r.json()["query"]["weight"] is None and r.json()["results"][0]["label"] == "red"


def test_thumbnails_missing_gallery_is_404(pixels_index: Path, shapes_folder: Path) -> None:
    import shutil

    client = TestClient(create_app(Searcher(load_index(pixels_index)), LIMITS))
    shutil.rmtree(shapes_folder)
    r = client.get("/api/items/0/image")
    assert r.status_code == 404 and "no longer there" in r.json()["error"]
    assert client.post("/search", json={"item": 0, "k": 3}).status_code == 200


def test_concurrent_requests_on_loopback(pixels_index: Path, shapes_folder: Path) -> None:
    """48 searches from 8 client threads against a real server on 127.0.0.1, all correct."""
    searcher = Searcher(load_index(pixels_index))
    gallery = FolderGallery(shapes_folder)
    keys = [it.key for it in searcher.index.items]
    expected = {}
    for key in keys[:12]:
        hits = searcher.search(searcher.query_vector(image=gallery.image_by_key(key)), k=5)
        expected[key] = [h.row for h in hits]
    uploads = {key: (shapes_folder / key).read_bytes() for key in expected}

    with serving(create_app(searcher, LIMITS)) as url:

        def one(i: int) -> tuple[str, int, list[int]]:
            key = list(expected)[i % len(expected)]
            with httpx.Client(base_url=url, timeout=20) as c:
                r = c.post(
                    "/search",
                    files={"image": ("q.png", uploads[key], "image/png")},
                    data={"k": "5"},
                )
            return key, r.status_code, [h["row"] for h in r.json().get("results", [])]

        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(one, range(48)))
        assert time.monotonic() - t0 < 30
        assert all(status == 200 for _, status, _ in answers)
        assert all(rows == expected[key] for key, _, rows in answers)


def test_thumbnails_keep_the_aspect_ratio(tmp_path: Path) -> None:
    wide = np.zeros((300, 600, 3), dtype=np.uint8)
    wide[:, :300] = (250, 0, 0)
    save_png(tmp_path / "g" / "photos" / "wide.png", wide)
    build_index(
        open_gallery(str(tmp_path / "g")),
        tmp_path / "ix",
        create_method("color-hist"),
        "color-hist",
        {},
    )
    client = TestClient(create_app(Searcher(load_index(tmp_path / "ix")), LIMITS))
    r = client.get("/api/items/0/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(r.content))
    assert im.size == (256, 128)
    assert im.getpixel((10, 64))[0] > 200 and im.getpixel((250, 64))[0] < 50
    (tmp_path / "g" / "photos" / "wide.png").write_bytes(b"now garbage")
    client = TestClient(create_app(Searcher(load_index(tmp_path / "ix")), LIMITS))
    r = client.get("/api/items/0/image")
    assert r.status_code == 404 and "no longer readable" in r.json()["error"]
