"""``python -m search load INDEX``: a bounded load test of the search server, on this machine only.

Like Triton's perf_analyzer, it sweeps the number of requests in flight (``--concurrency
1,4,16,64``): at each step that many clients send ``POST /search`` back to back, each waiting for
its answer before sending the next, until ``--requests`` answers have come back. Per step it
records throughput (answers per second over the step's wall time), latency percentiles (p50,
p90, p99, max) and every error, by kind (an HTTP status other than 200, a timeout, a reset
connection): under this load none may fail.

The server is started here (``python -m search serve INDEX``, default limits, on a free
127.0.0.1 port) and stopped at the end; ``--url`` targets one already running, which must be on
a loopback address. Requests are bounded in number and time (``--requests`` per step,
``--timeout`` per request), never sent anywhere else. Queries upload a PNG of a random
image of the index's size (decoding, embedding and search, as the page does), or name a gallery
row (``--query item``: search only).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from imsim.errors import UserError
from imsim.results import make_results, record, write_json_atomic

MAX_REQUESTS = 100_000  # per step: a load test here is bounded
MAX_CONCURRENCY = 1024
N_IMAGES = 32  # distinct query images, cycled
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # the server inherits


@dataclass
class Step:
    """One concurrency step: latencies of the answers that came back, and the errors."""

    concurrency: int
    latencies_ms: list[float]
    errors: Counter
    seconds: float
    warmup_errors: int = 0

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms or [np.nan])
        ok = len(self.latencies_ms)
        return {
            "concurrency": self.concurrency,
            "requests": ok + sum(self.errors.values()),
            "ok": ok,
            "errors": int(sum(self.errors.values())),
            "error_kinds": dict(self.errors),
            "warmup_errors": self.warmup_errors,
            "seconds": round(self.seconds, 3),
            "throughput_rps": ok / self.seconds if self.seconds > 0 else 0.0,
            "p50_ms": float(np.percentile(lat, 50)),
            "p90_ms": float(np.percentile(lat, 90)),
            "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(np.max(lat)),
            "mean_ms": float(np.mean(lat)),
        }


def check_loopback(url: str) -> str:
    """``url`` without a trailing slash, if it is http:// on a loopback address; else UserError."""
    u = urlparse(url)
    host = u.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if u.scheme != "http" or not loopback:
        raise UserError(f"--url {url}: the load test only targets http:// on 127.0.0.1 or ::1")
    return url.rstrip("/")


def query_images(size: int, n: int = N_IMAGES, seed: int = 0) -> list[bytes]:
    """``n`` PNG files of random (size, size) RGB images: realistic work for decode and embed."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


async def run_step(
    url: str,
    concurrency: int,
    requests: int,
    timeout: float,
    query: str,
    images: list[bytes],
    items: int,
) -> Step:
    """``requests`` searches with ``concurrency`` clients, each one request at a time."""
    import httpx

    latencies: list[float] = []
    errors: Counter = Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient, counter: Any) -> None:
        for i in counter:  # shared by the clients: each takes the next request number
            if query == "upload":
                kwargs: dict[str, Any] = {
                    "files": {"image": ("q.png", images[i % len(images)], "image/png")},
                    "data": {"k": "10"},
                }
            else:
                kwargs = {"data": {"item": str((i * 7919) % items), "k": "10"}}
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{url}/search", **kwargs)
            except httpx.TimeoutException:
                errors["timeout"] += 1
                continue
            except httpx.HTTPError as e:
                errors[type(e).__name__] += 1
                continue
            elapsed = 1000 * (time.perf_counter() - t0)
            try:
                answered = r.status_code == 200 and "results" in r.json()
            except ValueError:
                answered = False
            if answered:
                latencies.append(elapsed)
            else:
                errors[f"HTTP {r.status_code}"] += 1

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        warm = iter(range(concurrency))  # open every connection once, not measured
        await asyncio.gather(*(client_loop(client, warm) for _ in range(concurrency)))
        warmup_errors = sum(errors.values())
        latencies.clear()
        errors.clear()
        counter = iter(range(requests))
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client, counter) for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    return Step(concurrency, latencies, errors, seconds, warmup_errors)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(index: str, extra: list[str], startup_s: float = 120.0) -> tuple[Any, str]:
    """``python -m search serve INDEX`` on a free loopback port: (process, base URL)."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "search", "serve", index, "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
            raise UserError(f"the server did not start: {err[-1] if err else 'no message'}")
        try:
            if httpx.get(f"{url}/api/info", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise UserError(f"the server did not answer within {startup_s:.0f} s")


def stop_server(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def sweep(url: str, args: argparse.Namespace, levels: list[int]) -> tuple[list[dict], dict]:
    """Every concurrency step against a running server: (step summaries, the server's info)."""
    import httpx

    info = httpx.get(f"{url}/api/info", timeout=args.timeout).json()
    images = query_images(int(info["image_size"]))
    rows = []
    for c in levels:
        n = max(args.requests, 4 * c)
        step = asyncio.run(
            run_step(url, c, n, args.timeout, args.query, images, int(info["items"]))
        )
        s = step.summary()
        rows.append(s)
        print(
            f"concurrency {c:>3}: {s['throughput_rps']:7.1f} req/s, p50 {s['p50_ms']:7.1f} ms, "
            f"p99 {s['p99_ms']:7.1f} ms, {s['errors']} errors {s['error_kinds'] or ''}",
            file=sys.stderr,
        )
    return rows, info


def load_test(args: argparse.Namespace, levels: list[int]) -> int:
    """The ``load`` command: start (or reach) the server, sweep, write the results JSON."""
    if args.requests > MAX_REQUESTS or max(levels) > MAX_CONCURRENCY:
        raise UserError(
            f"a load test here is bounded: --requests <= {MAX_REQUESTS:,}, "
            f"--concurrency <= {MAX_CONCURRENCY}"
        )
    load_before = os.getloadavg()
    proc = None
    if args.url:
        url = check_loopback(args.url)
    else:
        from search.index import load_index

        load_index(args.index)  # a bad index is one line here, not a server that never starts
        proc, url = start_server(args.index, ["--backend", args.backend])
    try:
        rows, info = sweep(url, args, levels)
    finally:
        if proc is not None:
            stop_server(proc)
    print(
        "| concurrency | requests | errors | throughput (req/s) | p50 ms | p90 ms | p99 ms |\n"
        "|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['requests']} | {r['errors']} | "
            f"{r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
            f"{r['p99_ms']:.1f} |"
        )
    records = [
        record(
            info["method"],
            "search-load",
            "throughput_rps",
            r["throughput_rps"],
            **{k: v for k, v in r.items() if k != "throughput_rps"},
        )
        for r in rows
    ]
    doc = make_results(
        "search-load",
        records,
        config=vars(args),
        server={"url": url, "started_here": proc is not None, "info": info},
        query=args.query,
        errors=sum(r["errors"] + r["warmup_errors"] for r in rows),
        conditions={
            "loadavg_1_5_15_before": list(load_before),
            "loadavg_1_5_15_after": list(os.getloadavg()),
            "thread_env": {v: os.environ[v] for v in THREAD_VARS if v in os.environ},
        },
    )
    print(f"wrote {write_json_atomic(args.out, doc)}", file=sys.stderr)
    return 0 if doc["errors"] == 0 else 1
