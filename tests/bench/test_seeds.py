"""bench.seeds: rows of several seeds of one configuration combine into one row with a CI that
covers the seed spread and the shared sampling error."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from bench import seeds


def _desc(seed: int, depth: int = 20) -> dict:
    return {
        "spec": {"name": "triplet"},
        "arch": {"name": "resnet_cifar", "depth": depth},
        "recipe": {"name": "default", "augment": "crop+flip", "loss": {}},
        "seed": seed,
        "checkpoint": f"ck/s{seed}/triplet.safetensors",
        "weights_sha256": f"{seed:064d}",
        "epoch": 3 + seed,
    }


def _doc(values: dict[str, float], depth: int = 20) -> dict:
    rows, methods = [], {}
    for i, (mid, v) in enumerate(values.items()):
        rows.append(
            {"method": "triplet", "method_id": mid, "protocol": "episodes", "metric": "top1",
             "value": v, "ci95": 0.004, "chance": 0.2}
        )  # fmt: skip
        methods[mid] = _desc(i, depth)
    rows.append(
        {"method": "pixels", "protocol": "episodes", "metric": "top1", "value": 0.3, "ci95": 0.005}
    )
    methods["pixels"] = {"spec": {"name": "pixels"}}
    return {"kind": "accuracy", "results": rows, "methods": methods}


def test_seeds_of_one_configuration_combine():
    rows = seeds.summarize([_doc({"triplet.a": 0.50, "triplet.b": 0.54, "triplet.c": 0.58})])
    by = {r["method"]: r for r in rows}
    t = by["triplet (ResNet-20, default recipe)"]
    assert t["n_seeds"] == 3 and t["mean"] == pytest.approx(0.54)
    assert t["seed_sd"] == pytest.approx(0.04)
    seed_part = stats.t.ppf(0.975, 2) * 0.04 / math.sqrt(3)
    assert t["ci95"] == pytest.approx(math.hypot(seed_part, 0.004))
    assert t["ci95"] > 10 * 0.004  # far wider than the episode CI alone
    p = by["pixels"]
    assert p["n_seeds"] == 1 and p["ci95"] == pytest.approx(0.005)


def test_other_configurations_stay_apart():
    rows = seeds.summarize([_doc({"triplet.a": 0.5}), _doc({"triplet.d56": 0.6}, depth=56)])
    names = sorted(r["method"] for r in rows if r["method"] != "pixels")
    assert names == ["triplet (ResNet-20, default recipe)", "triplet (ResNet-56, default recipe)"]


def test_cli_writes_summary(tmp_path, capsys):
    f = tmp_path / "a.json"
    f.write_text(json.dumps(_doc({"triplet.a": 0.5, "triplet.b": 0.6})))
    out = tmp_path / "s.json"
    assert seeds.main([str(f), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["kind"] == "accuracy-seeds"
    assert {r["n_seeds"] for r in doc["results"]} == {1, 2}
    assert (
        "| triplet (ResNet-20, default recipe) | episodes | top1 | 55.00 |"
        in capsys.readouterr().out
    )


def test_cli_refuses_other_files(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps({"kind": "parity", "results": []}))
    with pytest.raises(SystemExit) as e:
        from imsim.cli import run

        run(seeds.main, [str(f), "--out", str(tmp_path / "s.json")])
    assert e.value.code == 2


def test_one_seed_without_a_sampling_ci_has_none():
    row = {"method": "pixels", "protocol": "retrieval", "metric": "map@r", "value": 0.13}
    (r,) = seeds.summarize([{"kind": "accuracy", "results": [row], "methods": {}}])
    assert r["ci95"] is None and r["n_seeds"] == 1
    assert "| pixels | retrieval | map@r | 13.00 |  | 1 |" in seeds.format_table([r])
