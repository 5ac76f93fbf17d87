"""``bench.classical`` and ``bench.classical_variants`` end to end (slow: full seed protocol)."""

from __future__ import annotations

import json

import pytest

from bench import classical, classical_variants


@pytest.mark.slow
def test_bench_classical_writes_the_contract_keys(tmp_path):
    out = tmp_path / "speed.json"
    args = ["--ref-pairs", "4", "--repeats", "1", "--sift-images", "2", "--out", str(out)]
    assert classical.main(args) == 0
    doc = json.loads(out.read_text())
    for key in ("ssim_speedup", "ssim_max_abs_diff", "hist_speedup", "seed_protocol_seconds"):
        assert isinstance(doc[key], float)
    assert doc["ssim_max_abs_diff"] < 1e-6
    assert doc["seed_protocol"]["pairs"] == 950 * 50
    assert doc["sift"]["opencv_ms_per_image"] > 0


@pytest.mark.slow
def test_bench_classical_variants(tmp_path):
    out = tmp_path / "variants.json"
    args = ["--pool-size", "200", "--episodes", "5", "--out", str(out)]
    assert classical_variants.main(args) == 0
    rows = json.loads(out.read_text())["results"]
    assert {r["method"] for r in rows} == {"ssim", "hist", "keypoints"}
    assert all(0 <= r["value"] <= 1 for r in rows)
