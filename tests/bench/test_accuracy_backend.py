import json

import pytest

from bench.accuracy import main
from export.__main__ import main as export_main
from imsim.errors import UserError


def test_a_backend_stands_in_for_the_method_embed(tmp_path):
    onnx_dir = tmp_path / "onnx"
    assert export_main(["--method", "pixels", "--out", str(onnx_dir), "--check-images", "8"]) == 0
    common = ["--methods", "pixels", "--protocol", "seed"]
    assert main([*common, "--out", str(tmp_path / "own.json")]) == 0
    args = [
        "--backend",
        "onnxruntime",
        "--onnx-dir",
        str(onnx_dir),
        "--out",
        str(tmp_path / "b.json"),
    ]
    assert main([*common, *args]) == 0
    own = json.loads((tmp_path / "own.json").read_text())
    via = json.loads((tmp_path / "b.json").read_text())
    assert via["methods"]["pixels"]["backend"]["backend"] == "onnxruntime"
    for a, b in zip(own["results"], via["results"], strict=True):
        assert a["metric"] == b["metric"] and a["value"] == pytest.approx(b["value"], abs=1e-9)


def test_backend_on_a_method_without_network_is_refused(tmp_path):
    with pytest.raises(UserError, match="not a single network"):
        main(["--methods", "color-hist", "--backend", "torch", "--out", str(tmp_path / "x.json")])
