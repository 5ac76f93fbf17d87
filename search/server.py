"""``python -m search serve``: a JSON HTTP API (``POST /search``) and the web page in front of it.

FastAPI serves the API and one static page (plain HTML and JavaScript, no build step). Every
request body is capped before it is parsed; an upload that is not an image, too large or corrupt
gets a 4xx answer with a JSON ``{"error": message}``, as does any other bad request. Embedding
and search run in worker threads (one per CPU, requests queued in arrival order) so slow requests do
not block the event loop.

Nothing a client sends can make it answer 500 or drop a kept-open connection: every parameter is
validated (400/413/422 with a message), a JSON body nested deeper than ``MAX_JSON_DEPTH`` is refused
before it is parsed, answers encode any file name (``display_key``), and a catch-all middleware
turns whatever else escapes into a logged JSON error on a connection that stays usable.

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
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from imsim.errors import UserError
from search.gallery import Gallery, display_key, gallery_from_source, thumbnail
from search.query import RequestTooLarge, Searcher, decode_upload

FIELDS = ("item", "text", "k", "weight", "min_score")
MAX_JSON_DEPTH = 20  # a search request is one flat object; deeper bodies are refused unparsed
MAX_SAMPLE = 100  # items per /api/items answer
MAX_SEED = 2**63 - 1
log = logging.getLogger("search.server")
_JSON_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: lone surrogates (file names that are not UTF-8) as escapes."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text, counted without parsing it."""
    skeleton = np.frombuffer(_JSON_STRINGS.sub(b'""', body), dtype=np.uint8)
    opens = np.isin(skeleton, np.frombuffer(b"[{", dtype=np.uint8))
    closes = np.isin(skeleton, np.frombuffer(b"]}", dtype=np.uint8))
    step = opens.astype(np.int64) - closes.astype(np.int64)
    return int(np.cumsum(step).max(initial=0))


class CatchAll:
    """ASGI middleware: an exception that escapes every handler is logged with its traceback and
    answered as a JSON 500, instead of propagating to the server (which would reset the client's
    kept-open connection). The handlers above it make this the exception, not the rule."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as e:
            log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            if not started:
                try:
                    await _send_json(send, 500, f"internal error ({type(e).__name__}); see the log")
                except Exception:  # the client is gone; nothing left to tell it
                    log.warning("could not send the error response")


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
    body = json.dumps({"error": message}).encode()  # ensure_ascii: any message encodes
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
    return SafeJSONResponse({"error": message}, status_code=status)


def _shown(value: Any) -> str:
    """A client's value, quoted and cut short for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(name: str, value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise UserError(f"{name} must be an integer, got {_shown(value)}")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be an integer, got {_shown(value)}") from None


def _float(name: str, value: Any, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise UserError(f"{name} must be a number, got {_shown(value)}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be a number, got {_shown(value)}") from None
    if not np.isfinite(v):
        raise UserError(f"{name} must be finite, got {_shown(value)}")
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
        """``n`` (0 to 100) distinct items drawn with ``seed`` (0 to 2**63 - 1), in row order."""
        if not 0 <= n <= MAX_SAMPLE:
            raise UserError(f"n must be between 0 and {MAX_SAMPLE}, got {n}")
        if not 0 <= seed <= MAX_SEED:
            raise UserError(f"seed must be between 0 and 2**63 - 1, got {seed}")
        idx = self.searcher.index
        n = min(n, len(idx))
        rows = np.sort(np.random.default_rng(seed).choice(len(idx), n, replace=False))
        return [self._item(int(r)) for r in rows]

    def _item(self, row: int) -> dict[str, Any]:
        it = self.searcher.index.items[row]
        return {"row": row, "key": display_key(it.key), "label": it.label}

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
        if isinstance(item, bool) or not isinstance(item, str | int | None):
            raise UserError(f"item must be an integer row number, got {_shown(item)}")
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
        raw = await request.body()
        if json_depth(raw) > MAX_JSON_DEPTH:
            raise UserError(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:  # bad syntax, bad UTF-8, a 5000-digit number
            raise UserError(f"the body is not valid JSON ({e})") from None
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
    app = FastAPI(
        title="imsim search",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=SafeJSONResponse,
    )
    app.state.service = service
    # Searches run in as many worker threads as there are CPUs, the others wait their turn in
    # arrival order: forty threads contending for the GIL and the cores would serve fewer
    # requests per second, and the unlucky ones last.
    workers = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))

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

    @app.get("/api/items")
    def items(n: int = 12, seed: int = 0) -> SafeJSONResponse:
        return SafeJSONResponse(service.sample(n, seed))

    @app.get("/api/items/{row}/image")
    def item_image(row: int) -> Response:
        try:
            data, media_type = service.thumbnail(row)
        except LookupError as e:
            return _error(404, f"thumbnail unavailable: {e}")
        return Response(data, media_type=media_type, headers={"Cache-Control": "max-age=3600"})

    @app.post("/search")
    async def search(request: Request) -> SafeJSONResponse:
        fields, image = await _parse(request, limits)
        answer = await anyio.to_thread.run_sync(service.run, fields, image, limiter=workers)
        return SafeJSONResponse(answer)

    @app.get("/api/info")
    def info() -> SafeJSONResponse:
        return SafeJSONResponse(service.info())

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(CatchAll)  # outermost: nothing escapes it
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
        # uvicorn answers 503 once the open connections reach its limit, the new one included:
        # + 1 makes ``workers_limit`` connections the number served at once, as documented.
        limit_concurrency=workers_limit + 1,
        timeout_keep_alive=5,
        log_level="warning",
    )
