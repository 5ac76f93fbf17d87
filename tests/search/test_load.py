"""``python -m search load``: a bounded concurrency sweep against a loopback server, every error
counted, and the results JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from imsim.errors import UserError
from imsim.methods import create_method
from search.__main__ import main
from search.gallery import open_gallery
from search.index import build_index, load_index
from search.load import Step, check_loopback
from search.query import Searcher
from search.server import create_app
from tests.search.helpers import serving


def test_a_sweep_counts_answers_and_errors(
    shapes_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ix = tmp_path / "ix"
    build_index(open_gallery(str(shapes_folder)), ix, create_method("pixels"), "pixels", {})
    out = tmp_path / "load.json"
    with serving(create_app(Searcher(load_index(ix)))) as url:
        argv = ["load", str(ix), "--url", url, "--concurrency", "1,4", "--requests", "12"]
        assert main([*argv, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| concurrency | requests | errors |" in table
    doc = json.loads(out.read_text())
    assert doc["kind"] == "search-load" and doc["errors"] == 0
    rows = doc["results"]
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert [(r["requests"], r["ok"], r["errors"]) for r in rows] == [(12, 12, 0), (16, 16, 0)]
    for r in rows:
        assert r["metric"] == "throughput_rps" and r["value"] > 0
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert doc["server"]["info"]["items"] == 60


def test_step_summary_and_loopback_only() -> None:
    from collections import Counter

    s = Step(2, [10.0, 20.0, 30.0, 40.0], Counter({"HTTP 503": 1}), 2.0).summary()
    assert (s["requests"], s["ok"], s["errors"], s["throughput_rps"]) == (5, 4, 1, 2.0)
    assert s["p50_ms"] == 25.0 and s["max_ms"] == 40.0 and s["error_kinds"] == {"HTTP 503": 1}
    assert check_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_loopback("http://[::1]:80") == "http://[::1]:80"
    for url in ("http://10.0.0.1:80", "https://127.0.0.1", "http://example.com"):
        with pytest.raises(UserError, match="only targets"):
            check_loopback(url)
