import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.accuracy import build_parser, main
from imsim.errors import UserError
from imsim.methods import parse_methods


def test_shapes_end_to_end(tmp_path, capsys):
    out = tmp_path / "acc.json"
    args = ["--data", "shapes", "--methods", "pixels,color-hist", "--episodes", "100"]
    args += ["--out", str(out)]
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


def _small_imagefolder(root: Path, per_class: tuple[int, int] = (24, 12)) -> Path:
    """A 6-class PNG ImageFolder of shapes renders (first 3 classes seen, last 3 unseen)."""
    from PIL import Image

    from imsim.data.shapes import COLORS, SHAPES, render

    combos = ((0, 0), (1, 3), (2, 6), (3, 8), (5, 1), (7, 4))
    for split, n in zip(("train", "test"), per_class, strict=True):
        rng = np.random.default_rng(len(split))
        for s, c in combos:
            folder = root / split / f"{COLORS[c]}_{SHAPES[s]}"
            folder.mkdir(parents=True)
            for i, img in enumerate(render(np.full(n, s), np.full(n, c), rng)):
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def test_all_runs_every_available_method_end_to_end(tmp_path, capsys):
    # Every method `all` expands to here (the classical pipeline's seen-class fit included), on a
    # small gallery so that the expensive pairwise methods stay fast.
    data = _small_imagefolder(tmp_path / "data")
    out = tmp_path / "acc.json"
    args = [
        "--data",
        f"imagefolder:{data}",
        "--methods",
        "all",
        "--episodes",
        "20",
        "--queries",
        "5",
    ]
    args += ["--out", str(out)]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    expected = parse_methods("all", **vars(build_parser().parse_args(args)))
    assert len(expected) >= 6 and {"pixels", "color-hist", "classical"} <= set(expected)
    got = {(r["method"], r["protocol"]) for r in doc["results"]}
    for m in expected:
        for proto in ("seed", "episodes", "retrieval"):
            assert (m, proto) in got, (m, proto)
    assert len(doc["split"]["unseen"]) == 3
    assert all(0.0 <= r["value"] <= 1.0 for r in doc["results"])
    assert "| classical | episodes | top1 |" in capsys.readouterr().out


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
