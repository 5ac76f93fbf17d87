"""``python -m search serve``: a JSON HTTP API (``POST /search``) and the web page in front of it.

FastAPI serves the API and one static page (plain HTML and JavaScript, no build step). Every
request body is capped before it is parsed; an upload that is not an image, too large or corrupt
gets a 4xx answer with a JSON ``{"error": message}``, as does any other bad request. Embedding
and search run in the worker thread pool so slow requests do not block the event loop.

Endpoints:
- ``GET /``: the page.
- ``GET /api/info``: the index (method, size, whether text queries work, limits).
- ``GET /api/items?n=12&seed=0``: a random sample of gallery items, to pick a query from.
- ``GET /api/items/{row}/image``: an item's thumbnail (when the indexed gallery is still there).
- ``POST /search``: multipart form (``image`` file, ``item``, ``text``, ``k``, ``weight``,
  ``min_score``) or JSON (``image_base64`` instead of the file); returns the ranked hits.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from imsim.errors import UserError
from search.gallery import Gallery, gallery_from_source, thumbnail
from search.query import RequestTooLarge, Searcher, decode_upload

FIELDS = ("item", "text", "k", "weight", "min_score")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_k: int = 200


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413 before parsing them.

    Starlette caps multipart parts but not a JSON body, nor the total of a chunked upload, so the
    body is counted here, as it arrives, whatever its encoding.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                await _send_json(send, 400, "invalid Content-Length header")
                return
            if too_big:
                await _send_json(send, 413, self._message())
                return
        body, more = [], True
        size = 0
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_json(send, 413, self._message())
                return
            body.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"request body over the limit of {self.max_bytes // 1024} KiB"


async def _send_json(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int(name: str, value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise UserError(f"{name} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be an integer, got {value!r}") from None


def _float(name: str, value: Any, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise UserError(f"{name} must be finite, got {value!r}")
    return v


class SearchService:
    """The request-independent part of the server: parse a request, run it, shape the answer."""

    def __init__(self, searcher: Searcher, limits: Limits) -> None:
        self.searcher = searcher
        self.limits = limits
        self._gallery: Gallery | None = None
        self._gallery_error: str | None = None
        self._gallery_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        idx = self.searcher.index
        return {
            "method": idx.method["item"],
            "embedding_dim": idx.method["embedding_dim"],
            "items": len(idx),
            "text": self.searcher.has_text,
            "image_size": idx.image_size,
            "source": idx.manifest["source"].get("kind"),
            "limits": {
                "max_body_bytes": self.limits.max_body_bytes,
                "max_pixels": self.limits.max_pixels,
                "max_k": self.limits.max_k,
            },
        }

    def sample(self, n: int, seed: int) -> list[dict[str, Any]]:
        idx = self.searcher.index
        n = max(0, min(n, 100, len(idx)))
        rows = np.sort(np.random.default_rng(seed).choice(len(idx), n, replace=False))
        return [self._item(int(r)) for r in rows]

    def _item(self, row: int) -> dict[str, Any]:
        it = self.searcher.index.items[row]
        return {"row": row, "key": it.key, "label": it.label}

    def thumbnail(self, row: int) -> tuple[bytes, str]:
        """Item ``row`` as (image bytes, media type); LookupError when the gallery is gone."""
        idx = self.searcher.index
        if not 0 <= row < len(idx):
            raise UserError(f"no item {row}; the index has {len(idx)}")
        with self._gallery_lock:
            if self._gallery is None and self._gallery_error is None:
                try:
                    self._gallery = gallery_from_source(idx.manifest["source"])
                except UserError as e:
                    self._gallery_error = str(e)
        if self._gallery is None:
            raise LookupError(self._gallery_error)
        try:
            data = self._gallery.read_key(idx.items[row].key)
        except (OSError, KeyError) as e:
            raise LookupError(f"{idx.items[row].key} is no longer in the gallery ({e})") from e
        try:
            return thumbnail(data)
        except Exception as e:  # the file changed since indexing; decoders fail in many ways
            raise LookupError(f"{idx.items[row].key} is no longer readable ({e})") from e

    def run(self, fields: dict[str, Any], image_bytes: bytes | None) -> dict[str, Any]:
        """One search from parsed request fields; raises UserError on bad input."""
        unknown = sorted(set(fields) - set(FIELDS) - {"image_base64"})
        if unknown:
            raise UserError(
                f"unknown field(s) {unknown}; known: image, image_base64, {', '.join(FIELDS)}"
            )
        t0 = time.perf_counter()
        k = _int("k", fields.get("k"), 10)
        if not 1 <= k <= self.limits.max_k:
            raise UserError(f"k must be between 1 and {self.limits.max_k}, got {k}")
        weight = _float("weight", fields.get("weight"), 0.5)
        min_score = _float("min_score", fields.get("min_score"), None)
        text = fields.get("text")
        if text is not None and not isinstance(text, str):
            raise UserError("text must be a string")
        item = fields.get("item")
        if item is not None and item != "":
            row = _int("item", item, 0)
            if not 0 <= row < len(self.searcher.index):
                raise UserError(f"no item {row}; the index has {len(self.searcher.index)}")
            item = self.searcher.index.items[row].key
        else:
            item = None
        image = None
        if image_bytes is not None:
            image = decode_upload(
                image_bytes, self.searcher.index.image_size, self.limits.max_pixels
            )
        has_text = bool(text and text.strip())
        q = self.searcher.query_vector(image=image, item=item, text=text, weight=weight)
        hits = self.searcher.search(q, k=k, min_score=min_score)
        both = (image is not None or item is not None) and has_text
        return {
            "query": {
                "image": image is not None,
                "item": item,
                "text": text.strip() if has_text else None,
                "weight": weight if both else None,
                "k": k,
                "min_score": min_score,
            },
            "results": [h.to_dict() for h in hits],
            "took_ms": round(1000 * (time.perf_counter() - t0), 2),
        }


async def _parse(request: Request, limits: Limits) -> tuple[dict[str, Any], bytes | None]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"the body is not valid JSON ({e})") from e
        if not isinstance(body, dict):
            raise UserError("the JSON body must be an object")
        data = body.get("image_base64")
        image = None
        if data is not None:
            if not isinstance(data, str):
                raise UserError("image_base64 must be a base64 string")
            try:
                image = base64.b64decode(data.split(",", 1)[-1], validate=True)
            except (binascii.Error, ValueError) as e:
                raise UserError(f"image_base64 is not valid base64 ({e})") from e
        return body, image
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(
            max_files=1, max_fields=len(FIELDS) + 1, max_part_size=limits.max_body_bytes
        )
        fields: dict[str, Any] = {}
        image = None
        for key, value in form.multi_items():
            if key == "image":
                if isinstance(value, str):
                    raise UserError("image must be a file upload")
                data = await value.read()
                image = data or None  # an empty file input means "no image"
            else:
                fields[key] = value
        return fields, image
    raise UserError("send multipart/form-data or application/json")


def create_app(searcher: Searcher, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application for one index."""
    limits = limits or Limits()
    service = SearchService(searcher, limits)
    app = FastAPI(title="imsim search", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(RequestTooLarge)
    async def too_large(_: Request, e: RequestTooLarge) -> JSONResponse:
        return _error(413, str(e))

    @app.exception_handler(UserError)
    async def user_error(_: Request, e: UserError) -> JSONResponse:
        return _error(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        msgs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        return _error(422, msgs)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        html = resources.files("search").joinpath("static/index.html").read_text()
        return HTMLResponse(html)

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return service.info()

    @app.get("/api/items")
    def items(n: int = 12, seed: int = 0) -> list[dict[str, Any]]:
        return service.sample(n, seed)

    @app.get("/api/items/{row}/image")
    def item_image(row: int) -> Response:
        try:
            data, media_type = service.thumbnail(row)
        except LookupError as e:
            return _error(404, f"thumbnail unavailable: {e}")
        return Response(data, media_type=media_type, headers={"Cache-Control": "max-age=3600"})

    @app.post("/search")
    async def search(request: Request) -> dict[str, Any]:
        fields, image = await _parse(request, limits)
        return await run_in_threadpool(service.run, fields, image)

    @app.exception_handler(Exception)
    async def internal(_: Request, e: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(e).__name__}); see the server log")

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    return app


def serve(searcher: Searcher, host: str, port: int, limits: Limits, workers_limit: int) -> None:
    """Run the server with uvicorn until interrupted."""
    import uvicorn

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        print(
            f"warning: serving on {host}: reachable from other machines, without authentication",
            file=sys.stderr,
        )
    print(
        f"serving {searcher.index.path} ({len(searcher.index)} items, "
        f"{searcher.index.method['item']}) at http://{host}:{port}/",
        file=sys.stderr,
    )
    uvicorn.run(
        create_app(searcher, limits),
        host=host,
        port=port,
        limit_concurrency=workers_limit,
        timeout_keep_alive=5,
        log_level="warning",
    )
