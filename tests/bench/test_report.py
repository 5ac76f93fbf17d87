import json

import pytest

from bench import report
from imsim.errors import UserError
from imsim.results import make_results, record, write_json_atomic


def _fps(path, method, backend, rows, created="2026-01-01T00:00:00+00:00"):
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
    text = report.build_report(r, {"net": 32}, plot)
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
    assert report.main(["--results", str(r), "--target-batch", "net=32"]) == 0
    assert (r / "REPORT.md").read_text().startswith("# imsim")
    assert "| net |" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no accuracy, parity or fps results"):
        report.main(["--results", str(tmp_path / "empty")])
    with pytest.raises(UserError, match="METHOD=BATCH"):
        report.main(["--results", str(r), "--target-batch", "net"])
    with pytest.raises(UserError, match="not found"):
        report.main(["--results", str(tmp_path / "nope")])


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
    text = report.build_report(r, {}, None)
    assert "| triplet (ResNet-20) | 60.00 ± 1.00 |  |  |  |" in text  # no speed for ResNet-20
    assert "| triplet (ResNet-56) | torch bf16 |" in text
    assert report.model_label({"clip_model": "ViT-B-32"}) == "ViT-B-32"
    assert report.model_label({"spec": {}}) is None
    seed = {"arch": {"name": "resnet_cifar", "depth": 20}, "recipe": {"name": "seed"}}
    assert report.model_label(seed) == "ResNet-20, seed recipe"
    assert report.model_label({"recipe": "seed"}) == "seed recipe"
    assert report.model_label({"arch": {"name": "autoencoder"}, "recipe": "default"}) == (
        "autoencoder"
    )


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
    text = report.build_report(r, {}, None)
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
