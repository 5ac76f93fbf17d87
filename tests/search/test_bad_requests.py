"""The HTTP API never answers 500 to what a client sends: a corpus of bad requests, each a 4xx
with one JSON message; file names that are not UTF-8; 16-bit and EXIF-rotated uploads; a
catch-all that keeps the connection usable when something unforeseen fails."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
import httpx
from fastapi.testclient import TestClient

from imsim.methods import create_method
from search.gallery import open_gallery
from search.index import build_index, load_index
from search.query import Searcher
from search.server import MAX_JSON_DEPTH, Limits, SearchService, create_app, json_depth
from tests.images import bomb_png, exif_rotated, gradient16, png_bytes, upright
from tests.search.helpers import save_png, serving, solid

LIMITS = Limits(max_body_bytes=200_000, max_pixels=250_000, max_k=50)
ODD = os.fsdecode(b"caf\xe9.png")  # a Latin-1 file name: not valid UTF-8


@pytest.fixture(scope="module")
def odd_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pixels index of 6 images, one of them named with a byte that is not UTF-8, one a
    portrait photo stored sideways with an EXIF orientation, one a 16-bit gradient."""
    tmp_path = tmp_path_factory.mktemp("odd")
    g = tmp_path / "g"
    save_png(g / "red" / "0.png", solid((250, 10, 10)))
    save_png(g / "blue" / "0.png", solid((10, 10, 250)))
    save_png(g / "gray" / "0.png", solid((128, 128, 128)))
    save_png(g / "odd" / ODD, solid((10, 250, 10)))
    (g / "photo" / "portrait.png").parent.mkdir(parents=True)
    (g / "photo" / "portrait.png").write_bytes(exif_rotated(upright()))
    (g / "deep" / "grad16.png").parent.mkdir(parents=True)
    (g / "deep" / "grad16.png").write_bytes(png_bytes(gradient16(16, 16)))
    build_index(open_gallery(str(g)), tmp_path / "ix", create_method("pixels"), "pixels", {})
    return tmp_path / "ix"


@pytest.fixture(scope="module")
def client(odd_index: Path) -> TestClient:
    # raise_server_exceptions (the default): any exception escaping the app fails the test
    return TestClient(create_app(Searcher(load_index(odd_index)), LIMITS))


def _nested(depth: int) -> bytes:
    return b'{"item": 0, "x": ' + b"[" * depth + b"]" * depth + b"}"


BAD = [
    ("get", "/api/items?seed=-1", {}, 400, "seed must be between"),
    ("get", f"/api/items?seed={2**70}", {}, 400, "seed must be between"),
    ("get", "/api/items?n=-1", {}, 400, "n must be between"),
    ("get", "/api/items?n=1000", {}, 400, "n must be between"),
    ("get", "/api/items?n=abc", {}, 422, "n:"),
    ("get", "/api/items/-1/image", {}, 400, "no item -1"),
    ("get", "/api/items/99999999999999999999/image", {}, 400, "no item"),
    ("get", "/api/items/x/image", {}, 422, "row"),
    ("get", "/search", {}, 405, "Method Not Allowed"),
    ("get", "/nothing-here", {}, 404, "Not Found"),
    ("post", "/search", {"content": _nested(50_000), "headers": {"content-type": "application/json"}}, 400, "nests deeper"),  # noqa: E501
    ("post", "/search", {"content": b'{"item": 0, "k": ' + b"9" * 5000 + b"}", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),  # noqa: E501
    ("post", "/search", {"content": b'{"item": 0, "k": Infinity}', "headers": {"content-type": "application/json"}}, 400, "integer"),  # noqa: E501
    ("post", "/search", {"content": b'{"item": 0, "min_score": NaN}', "headers": {"content-type": "application/json"}}, 400, "finite"),  # noqa: E501
    ("post", "/search", {"content": b"\xff\xfe{}", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),  # noqa: E501
    ("post", "/search", {"json": {"item": 0, "weight": True}}, 400, "number"),
    ("post", "/search", {"json": {"item": [0]}}, 400, "integer row number"),
    ("post", "/search", {"json": {"item": {"row": 0}}}, 400, "integer row number"),
    ("post", "/search", {"json": {"item": -1}}, 400, "no item -1"),
    ("post", "/search", {"json": {"item": 0, "k": 51}}, 400, "k must be between 1 and 50"),
    ("post", "/search", {"json": {"item": 0, "min_score": "nan"}}, 400, "finite"),
    ("post", "/search", {"json": {"item": 0, "min_score": "1e999"}}, 400, "finite"),
    ("post", "/search", {"json": {"item": 0, "text": 5}}, 400, "text must be a string"),
    ("post", "/search", {"json": {"image_base64": "%%%"}}, 400, "not valid base64"),
    ("post", "/search", {"json": {"image_base64": 7}}, 400, "base64 string"),
    ("post", "/search", {"json": {"image_base64": base64.b64encode(png_bytes(solid((1, 2, 3)))[:60]).decode()}}, 400, "corrupt or truncated"),  # noqa: E501
    ("post", "/search", {"data": {"image": "not a file"}}, 400, "file upload"),
    ("post", "/search", {"files": {"image": ("b.png", bomb_png(), "image/png")}}, 413, "decompression-bomb"),  # noqa: E501
    ("post", "/search", {"files": {"image": ("b.png", bomb_png(400, 1000), "image/png")}}, 413, "400x1000 = 400,000 pixels"),  # noqa: E501
    ("post", "/search", {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, ""),  # noqa: E501
    ("post", "/search", {"content": b"{}", "headers": {"content-type": "application/json", "content-length": "abc"}}, 400, "Content-Length"),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(("verb", "url", "kwargs", "status", "message"), BAD)
def test_bad_request_is_a_4xx_with_one_message(
    client: TestClient, verb: str, url: str, kwargs: dict, status: int, message: str
) -> None:
    r = getattr(client, verb)(url, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def test_json_depth_is_counted_outside_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[[["}]}') == 3
    assert json_depth(b'"\\"[[[["') == 0 and json_depth(b"") == 0
    assert json_depth(_nested(MAX_JSON_DEPTH)) == MAX_JSON_DEPTH + 1


def test_names_that_are_not_utf8_are_answered_escaped(client: TestClient) -> None:
    index = client.app.state.service.searcher.index  # type: ignore[attr-defined]
    row = [it.key for it in index.items].index(f"odd/{ODD}")
    items = client.get("/api/items?n=100&seed=0")
    assert items.status_code == 200
    assert {"row": row, "key": "odd/caf\\xe9.png", "label": "odd"} in items.json()
    green = png_bytes(solid((10, 250, 10)))
    r = client.post("/search", files={"image": ("q.png", green, "image/png")}, data={"k": "6"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["key"] == "odd/caf\\xe9.png"
    assert client.post("/search", json={"item": row}).status_code == 200
    assert client.get(f"/api/items/{row}/image").status_code == 200
    for seed in range(20):  # whichever rows a sample draws
        assert client.get(f"/api/items?n=3&seed={seed}").status_code == 200


def test_uploads_decode_like_the_gallery(client: TestClient) -> None:
    """A 16-bit upload finds its own gallery image, as does an upright copy of a photo whose
    gallery file is stored sideways with an EXIF orientation."""
    for upload, key in (
        (png_bytes(gradient16(16, 16)), "deep/grad16.png"),
        (png_bytes(upright()), "photo/portrait.png"),
    ):
        r = client.post("/search", files={"image": ("q.png", upload, "image/png")})
        assert r.status_code == 200, r.text
        top = r.json()["results"][0]
        assert (top["key"], round(top["score"], 4)) == (key, 1.0)


def test_an_unforeseen_failure_is_a_json_500_on_a_connection_that_stays_open(
    odd_index: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    searcher = Searcher(load_index(odd_index))
    with serving(create_app(searcher, LIMITS)) as url, httpx.Client(base_url=url) as c:
        first = c.post(
            "/search", content=_nested(50_000), headers={"content-type": "application/json"}
        )
        assert first.status_code == 400
        monkeypatch.setattr(SearchService, "run", broken)
        r = c.post("/search", json={"item": 0})
        assert r.status_code == 500 and r.json() == {
            "error": "internal error (RuntimeError); see the log"
        }
        monkeypatch.undo()
        after = c.post("/search", json={"item": 0})
        assert after.status_code == 200
        stream = first.extensions["network_stream"]
        assert after.extensions["network_stream"] is stream  # the same kept-open connection
    assert "RuntimeError: a bug" in caplog.text  # logged, with its traceback


def test_a_sample_of_every_row_is_valid(client: TestClient) -> None:
    rows = client.get("/api/items?n=100").json()
    assert sorted(r["row"] for r in rows) == list(range(6))
    assert np.all([isinstance(r["key"], str) for r in rows])
