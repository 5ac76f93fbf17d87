import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.accuracy import main
from imsim.errors import UserError


def test_shapes_end_to_end(tmp_path, capsys):
    out = tmp_path / "acc.json"
    args = ["--data", "shapes", "--methods", "all", "--episodes", "100", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| pixels | seed | top5 |" in printed and "chance 50.0%" in printed
    doc = json.loads(out.read_text())
    assert doc["schema"] == "imsim.results/1" and doc["kind"] == "accuracy"
    assert doc["dataset"]["name"] == "shapes" and len(doc["split"]["unseen"]) == 10
    assert {"cpu", "packages", "git_commit"} <= set(doc["env"])
    rows = {(r["method"], r["protocol"], r["metric"]): r for r in doc["results"]}
    for m in ("pixels", "color-hist"):
        ep = rows[(m, "episodes", "top1")]
        # The data separates methods: clearly above chance, clearly below perfect.
        assert ep["chance"] + 3 * ep["ci95"] < ep["value"] < 0.8
        assert 0.5 < rows[(m, "seed", "top5")]["value"] < 0.97
        assert {"recall@1", "recall@5", "map@r"} <= {k[2] for k in rows if k[0] == m}


def test_bad_arguments_give_one_line(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "bench.accuracy",
        "--protocol",
        "seed,nope",
        "--out",
        str(tmp_path / "x.json"),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("error: unknown protocol")
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.realdata
def test_real_cifar10(cifar10_zip, tmp_path):
    out = tmp_path / "acc.json"
    assert (
        main(
            [
                "--data",
                f"imagefolder:{cifar10_zip}",
                "--protocol",
                "seed",
                "--methods",
                "pixels",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["results"]
    top = {r["metric"]: r for r in rows}
    # 5 unseen classes: k = 2 of 5, chance 40%.
    assert top["top2"]["chance"] == pytest.approx(0.4) and top["top2"]["n_classes"] == 5
    assert top["top2"]["value"] > 0.45


def test_refuses_checkpoint_trained_on_evaluated_classes(tmp_path):
    # The committed shapes checkpoint trained on yellow_circle: evaluating it as unseen is leakage.
    ckpt = Path(__file__).resolve().parents[2] / "checkpoints" / "shapes" / "triplet.safetensors"
    args = [
        "--data",
        "shapes",
        "--methods",
        f"triplet:{ckpt}",
        "--protocol",
        "seed",
        "--out",
        str(tmp_path / "x.json"),
    ]
    assert main(args) == 0  # its own split: fine
    with pytest.raises(UserError, match="was trained on yellow_circle"):
        main([*args, "--unseen-classes", "red_circle,yellow_circle,orange_circle"])
