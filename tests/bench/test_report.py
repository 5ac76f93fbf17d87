import json

import pytest

from bench.report.build import build_report, main
from bench.report.identity import model_label
from bench.report.ladder import ladder_points, ladder_rows, parse_ladder_batches
from bench.report.load import fps_setups, load_documents
from imsim.errors import UserError
from imsim.results import make_results, record, write_json_atomic


def _fps(path, method, backend, rows, created="2026-01-01T00:00:00+00:00", cpu=None):
    recs = []
    for batch, ips in rows:
        if ips is None:
            recs.append(
                {
                    "method": method,
                    "protocol": "fps",
                    "metric": "images_per_s",
                    "value": None,
                    "batch_size": batch,
                    "status": "oom",
                    "error": "OOM",
                }
            )
            continue
        ms = 1000 * batch / ips
        recs.append(
            record(
                method,
                "fps",
                "images_per_s",
                ips,
                batch_size=batch,
                status="ok",
                images_per_s=ips,
                p50_ms=ms,
                p99_ms=ms * 1.1,
                model_only={
                    "images_per_s": ips * 1.05,
                    "p50_ms": ms,
                    "gflops_per_s": ips * 2.0,
                    "peak_fraction": 0.5,
                },
            )
        )
    doc = make_results(
        "fps",
        recs,
        config={},
        backend=backend,
        peak={"dtype": "bfloat16", "gflops_per_s": 400.0},
        load_average={"start": [0.5, 0.5, 0.5], "end": [0.6, 0.5, 0.5]},
    )
    doc["created"] = created
    if cpu is not None:  # another machine
        doc["env"]["cpu"] = cpu
    write_json_atomic(path, doc)


def _parity(path, method, backend, passed, dataset="shapes"):
    doc = make_results(
        "parity",
        [record(method, "parity", "cosine_min", 0.9999, passed=passed)],
        config={},
        passed=passed,
        backend=backend,
        dataset={"name": dataset},
    )
    write_json_atomic(path, doc)


def _accuracy(path, method, top1, dataset="shapes"):
    rows = [
        record(method, "episodes", "top1", top1, ci95=0.004),
        record(method, "seed", "top5", 0.9, k=5),
        record(method, "seed", "top1", 0.4),
    ]
    write_json_atomic(
        path, make_results("accuracy", rows, config={"backend": None}, dataset={"name": dataset})
    )


TORCH_BF16 = {
    "backend": "torch",
    "precision": "bf16",
    "device": "cpu",
    "channels_last": True,
    "compile": False,
}
TORCH_REF = {**TORCH_BF16, "precision": "fp32", "channels_last": False}
ORT = {
    "backend": "onnxruntime",
    "precision": "fp32",
    "device": "cpu",
    "provider": "CPUExecutionProvider",
    "graph_optimization": "all",
}


def test_report_joins_accuracy_throughput_and_parity(tmp_path):
    r = tmp_path / "results"
    _accuracy(r / "acc.json", "net", 0.42)
    _fps(r / "fps" / "ref.json", "net", TORCH_REF, [(1, 10.0), (32, 50.0)])
    _fps(r / "fps" / "bf16.json", "net", TORCH_BF16, [(1, 30.0), (32, 200.0), (512, None)])
    _fps(r / "fps" / "ort.json", "net", ORT, [(1, 20.0), (32, 300.0)])
    # An older run of the same setup is superseded by the newer file.
    _fps(r / "fps" / "bf16-old.json", "net", TORCH_BF16, [(32, 999.0)], created="2025-01-01")
    _parity(r / "parity" / "bf16.json", "net", TORCH_BF16, True)
    _parity(r / "parity" / "ort.json", "net", ORT, False)
    (r / "not-results.json").write_text(json.dumps([1, 2]))
    plot = r / "report.png"
    text = build_report(r, {"net": 32}, plot)
    assert plot.stat().st_size > 1000
    lines = text.splitlines()
    # The fastest CPU setup is onnxruntime, but its parity FAILed: the comparison takes bf16.
    comp = next(line for line in lines if line.startswith("| net | 42.00 ± 0.40"))
    assert "| torch bf16 | 200.0 (32) | not run (no GPU) |" in comp
    row = {line.split(" | ")[1]: line for line in lines if line.startswith("| net | ")}
    assert "OOM at 512" in row["torch bf16"] and "PASS (shapes)" in row["torch bf16"]
    assert "999" not in text
    assert "FAIL (shapes)" in row["onnxruntime fp32 opt all"]
    assert row["torch fp32 NCHW"].endswith("| reference |")
    assert "200.0 (batch 32)" in row["torch bf16"] and "| 33.33 |" in row["torch bf16"]
    assert "No GPU results" in text and "90.00 (top-5)" in text
    assert "load average start [0.5, 0.5, 0.5]" in text


def test_report_command_writes_files_and_refuses_empty_folders(tmp_path, capsys):
    r = tmp_path / "results"
    _accuracy(r / "acc.json", "net", 0.5)
    assert main(["--results", str(r), "--target-batch", "net=32"]) == 0
    assert (r / "REPORT.md").read_text().startswith("# imsim")
    assert "| net |" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no accuracy, parity or fps results"):
        main(["--results", str(tmp_path / "empty")])
    with pytest.raises(UserError, match="METHOD=BATCH"):
        main(["--results", str(r), "--target-batch", "net"])
    with pytest.raises(UserError, match="not found"):
        main(["--results", str(tmp_path / "nope")])


def test_methods_are_named_with_their_network(tmp_path):
    r = tmp_path / "results"
    rows = [record("triplet", "episodes", "top1", 0.6, ci95=0.01)]
    arch20 = {"arch": {"name": "resnet_cifar", "depth": 20}}
    write_json_atomic(
        r / "acc.json",
        make_results(
            "accuracy", rows, config={}, dataset={"name": "shapes"}, methods={"triplet": arch20}
        ),
    )
    doc_path = r / "fps.json"
    _fps(doc_path, "triplet", TORCH_BF16, [(256, 2000.0)])
    doc = json.loads(doc_path.read_text())
    doc["method"] = {"arch": {"name": "resnet_cifar", "depth": 56}}
    doc_path.write_text(json.dumps(doc))
    text = build_report(r, {}, None)
    assert "| triplet (ResNet-20) | 60.00 ± 1.00 |  |  |  |" in text  # no speed for ResNet-20
    assert "| triplet (ResNet-56) | torch bf16 |" in text
    assert model_label({"clip_model": "ViT-B-32"}) == "ViT-B-32"
    assert model_label({"spec": {}}) is None
    seed = {"arch": {"name": "resnet_cifar", "depth": 20}, "recipe": {"name": "seed"}}
    assert model_label(seed) == "ResNet-20, seed recipe"
    assert model_label({"recipe": "seed"}) == "seed recipe"
    assert model_label({"arch": {"name": "autoencoder"}, "recipe": "default"}) == ("autoencoder")


def test_unusable_files_are_named_with_the_reason(tmp_path, capsys):
    """Corrupt JSON and results documents with missing fields are skipped by name, in the report
    and on stderr, instead of silently (or with a KeyError traceback)."""
    r = tmp_path / "results"
    _accuracy(r / "acc.json", "net", 0.42)
    (r / "cut.json").write_text('{"kind": "fps", "results": [')
    _fps(r / "fps" / "no-speed.json", "net", TORCH_REF, [(1, 10.0)])
    doc = json.loads((r / "fps" / "no-speed.json").read_text())
    del doc["results"][0]["images_per_s"]
    (r / "fps" / "no-speed.json").write_text(json.dumps(doc))
    _parity(r / "parity" / "p.json", "net", ORT, True)
    doc = json.loads((r / "parity" / "p.json").read_text())
    doc["results"] = "all good"
    (r / "parity" / "p.json").write_text(json.dumps(doc))
    (r / "training.json").write_text(json.dumps({"schema": "x", "kind": "training"}))
    (r / "binary.json").write_bytes(b"\xff\xfe\x00")
    text = build_report(r, {}, None)
    err = capsys.readouterr().err
    expected = {
        "cut.json": "not valid JSON",
        "binary.json": "not valid JSON",
        "fps/no-speed.json": "a results file of kind fps, but results[0] has status ok without",
        "parity/p.json": "a results file of kind parity, but it has no results list",
    }
    for name, reason in expected.items():
        assert f"warning: {r / name}: skipped, {reason}" in err
        assert f"- `{r / name}`: skipped, {reason}" in text
    assert "1 results files of kinds not reported here: training (1)" in text
    assert "| net | 42.00 ± 0.40 |" in text  # the good file is still reported


def _gated_parity(path, method, backend, passed, tie, cos, delta, ci, dataset="shapes"):
    """A parity file as bench.parity writes it since the gate: gated checks and the paired delta."""
    tags = {k: backend[k] for k in ("backend", "precision", "device")}
    rows = [
        record(method, "parity", "cosine_min", cos, **tags, tolerance=0.99, op=">=",
               passed=cos >= 0.99, gate=True, level="tensor"),
        record(method, "parity", "top1_agreement_tie_aware", tie, **tags, tolerance=0.99,
               op=">=", passed=tie >= 0.99, gate=True, level="task"),
        record(method, "parity", "top1_agreement", 0.7, **tags, tolerance=0.99, op=">=",
               passed=False, gate=False, level="task"),
        record(method, "seed", "top1_delta_points", 0.1, **tags, tolerance=0.3, op="abs<=",
               passed=True, gate=False, level="task"),
        record(method, "episodes", "top1_delta_points", delta, **tags, tolerance=0.5,
               op="ci within +-", passed=abs(delta) + ci <= 0.5, gate=True, level="task",
               ci95=ci, paired_episodes=1000),
    ]  # fmt: skip
    doc = make_results(
        "parity", rows, config={}, passed=passed, backend=backend, dataset={"name": dataset}
    )
    write_json_atomic(path, doc)


ORT_INT8 = {**ORT, "precision": "int8"}
OV_FP16 = {"backend": "openvino", "precision": "fp16", "device": "cpu", "threads": 2}


def _ladder_tree(r):
    _fps(r / "fps" / "ref.json", "net", TORCH_REF, [(32, 50.0), (256, 100.0)])
    _fps(r / "fps" / "bf16.json", "net", TORCH_BF16, [(32, 200.0), (256, 250.0)])
    _fps(r / "fps" / "int8.json", "net", ORT_INT8, [(32, 300.0)])  # not measured at 256
    # bf16 on a second machine that has no torch fp32 run: no ratio, never one across machines.
    _fps(r / "fps" / "other.json", "net", TORCH_BF16, [(256, 400.0)], cpu="Other CPU")
    _gated_parity(r / "parity" / "int8.json", "net", ORT_INT8, True, 0.998, 0.995, -0.08, 0.09)
    _gated_parity(r / "parity" / "ov.json", "net", OV_FP16, False, 0.97, 0.999, 0.2, 0.4)
    _parity(r / "parity" / "bf16.json", "net", TORCH_BF16, False)  # before the gate


def _ladder_lines(text):
    table = text.split("## Precision ladder", 1)[1].split("\n## ", 1)[0]
    return {
        (cells[1], cells[2]): cells
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| precision")
        for cells in [[c.strip() for c in line.split("|")[1:-1]]]
    }


def test_precision_ladder_ratios_verdicts_and_missing_cells(tmp_path):
    r = tmp_path / "results"
    _ladder_tree(r)
    text = build_report(r, {}, None)
    assert "### net, batch 256" in text  # the largest batch any setup measured
    rows = _ladder_lines(text)
    here = next(k[1] for k in rows if k[0] == "torch fp32 NCHW")
    # precision | setup | machine | images/s | ratio | data | tie-aware | cos | paired | gate
    ref = rows[("torch fp32 NCHW", here)]
    assert ref[0] == "fp32" and ref[3:5] == ["100.0", "1.00x"] and ref[-1] == "reference"
    bf16 = rows[("torch bf16", here)]
    assert bf16[3:5] == ["250.0", "2.50x"]
    assert bf16[5:] == [
        "shapes",
        "not measured",
        "1.0e-04",
        "not measured",
        "FAIL (pre-gate checks)",
    ]
    other = next(v for k, v in rows.items() if k[1].startswith("CPU Other CPU"))
    assert other[3:5] == ["400.0", "not measured"]
    int8 = rows[("onnxruntime int8 opt all", here)]
    assert int8[0] == "int8" and int8[3:5] == ["not measured", "not measured"]
    assert int8[5:] == ["shapes", "99.80%", "5.0e-03", "-0.08 ± 0.09, 1000 episodes", "PASS"]
    ov = rows[("openvino fp16 2 threads", "not measured")]  # parity only: no speed invented
    assert ov[3:5] == ["not measured", "not measured"] and ov[-1] == "FAIL"
    assert ov[8] == "+0.20 ± 0.40, 1000 episodes"
    order = [k[0] for k in rows]
    assert order.index("torch fp32 NCHW") < order.index("openvino fp16 2 threads")
    assert order.index("openvino fp16 2 threads") < order.index("torch bf16")
    assert order.index("torch bf16") < order.index("onnxruntime int8 opt all")


def test_ladder_batch_option_and_the_speedup_plot(tmp_path):
    r = tmp_path / "results"
    _ladder_tree(r)
    plot = tmp_path / "report.png"
    text = build_report(r, {}, plot, parse_ladder_batches(["net=32"]))
    assert "### net, batch 32" in text
    rows = _ladder_lines(text)
    int8 = next(v for k, v in rows.items() if k[0] == "onnxruntime int8 opt all")
    assert int8[3:5] == ["300.0", "6.00x"]  # 300 / 50 images/s, both at batch 32
    assert plot.stat().st_size > 1000
    docs, _, _ = load_documents(r)
    ladder = ladder_rows(fps_setups(docs["fps"]), docs["parity"], {None: 32})
    (point,) = ladder_points(ladder)  # the only rung with both a speed-up and a paired delta
    assert point.label == "net onnxruntime int8 opt all (shapes)" and point.passed
    assert (point.speedup, point.delta, point.ci95, point.tolerance) == (6.0, -0.08, 0.09, 0.5)
    assert parse_ladder_batches(["64", "a (b)=8"]) == {None: 64, "a (b)": 8}
    for bad in ("net=", "=8", "net=x", "0"):
        with pytest.raises(UserError, match="--ladder-batch"):
            parse_ladder_batches([bad])
    assert main(["--results", str(r), "--ladder-batch", "net=32", "--plot", str(plot)]) == 0
    assert "### net, batch 32" in (r / "REPORT.md").read_text()


def test_ladder_prefers_the_parity_verdict_of_the_same_machine(tmp_path):
    r = tmp_path / "results"
    _ladder_tree(r)
    # A newer bf16 verdict from the other machine (int8 and bf16 numerics differ between CPUs):
    # each machine's row shows its own, and says so when it has to borrow another's.
    other = r / "parity" / "bf16-other.json"
    _gated_parity(other, "net", TORCH_BF16, True, 1.0, 0.9999, 0.01, 0.02)
    doc = json.loads(other.read_text())
    doc["env"]["cpu"], doc["created"] = "Other CPU", "2999-01-01T00:00:00+00:00"
    other.write_text(json.dumps(doc))
    rows = _ladder_lines(build_report(r, {}, None))
    here = next(k[1] for k in rows if k[0] == "torch fp32 NCHW")
    assert rows[("torch bf16", here)][5:] == [
        "shapes",
        "not measured",
        "1.0e-04",
        "not measured",
        "FAIL (pre-gate checks)",
    ]
    there = next(v for k, v in rows.items() if k[1].startswith("CPU Other CPU"))
    assert there[5] == "shapes" and there[-1] == "PASS"
    int8 = rows[("onnxruntime int8 opt all", here)]
    assert int8[5] == "shapes"  # measured here: no machine named
    other.unlink()
    rows = _ladder_lines(build_report(r, {}, None))
    there = next(v for k, v in rows.items() if k[1].startswith("CPU Other CPU"))
    assert there[5].startswith("shapes (on CPU ") and there[-1] == "FAIL (pre-gate checks)"


def test_another_class_split_is_its_own_column(tmp_path):
    r = tmp_path / "results"
    _accuracy(r / "default.json", "net", 0.42)
    split = r / "split.json"
    _accuracy(split, "net", 0.25)  # newer, other unseen classes: must not replace the default
    doc = json.loads(split.read_text())
    doc["config"]["unseen_classes"] = "a,b"
    doc["created"] = "2999-01-01T00:00:00+00:00"
    split.write_text(json.dumps(doc))
    text = build_report(r, {}, None)
    head = next(line for line in text.splitlines() if line.startswith("| method | episodes"))
    assert "episodes top-1, shapes (%)" in head and "shapes (unseen: a,b)" in head
    row = next(line for line in text.splitlines() if line.startswith("| net |"))
    assert "42.00 ± 0.40" in row and "25.00 ± 0.40" in row
    assert row.index("25.00") > row.index("42.00")  # columns sorted: the default split first
