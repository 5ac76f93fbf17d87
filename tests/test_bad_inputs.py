"""A corpus of bad inputs to every command: each ends with exit status 2 and exactly one
``error:`` line (no traceback), before any work, and every file written before is intact.

Commands run in-process through ``imsim.cli.run`` (what ``python -m`` runs); a few run as real
``python -m`` processes to check the exit status and stderr a user sees. The data-loss and
silently-wrong cases of issue 15 are here too: each fails on the code before the fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import accuracy, classical, classical_variants, fps, parity, report
from engines import build as engines_build
from export.__main__ import main as export_main
from imsim.checkpoints import save_checkpoint
from imsim.cli import run
from imsim.methods import create_method
from search.__main__ import main as search_main
from search.gallery import open_gallery
from tests.images import bomb_png, exif_rotated, gradient16, png_bytes, upright
from tests.search.helpers import save_png, solid
from train.__main__ import main as train_main

ROOT = Path(__file__).resolve().parents[1]
Main = Callable[[list[str] | None], int | None]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def fails(main: Main, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run a command as ``python -m`` does: exit 2, one ``error:`` line, no traceback."""
    with pytest.raises(SystemExit) as e:
        run(main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A workspace of things a user already has: a folder of their files, a results file, a
    gallery and its index, a finished training run, a web app with a manifest.json, results."""
    root = tmp_path_factory.mktemp("ws")
    (root / "mine").mkdir()
    (root / "mine" / "keep.txt").write_text("my notes")
    (root / "results.json").write_text('{"kind": "accuracy", "results": []}\n')
    for c, rgb in (("red", (250, 0, 0)), ("blue", (0, 0, 250)), ("gray", (128, 128, 128))):
        for i in range(2):
            save_png(root / "gallery" / c / f"{i}.png", solid(rgb, 8))
    index = root / "index"
    # built as a user would, so that re-running the same command would update it in place
    search_main(
        ["index", "--method", "pixels", "--images", str(root / "gallery"), "--out", str(index)]
    )
    noted = root / "noted-index"
    noted.mkdir()
    for f in index.iterdir():
        (noted / f.name).write_bytes(f.read_bytes())
    (noted / "notes.txt").write_text("which gallery this was")
    (root / "webapp").mkdir()
    (root / "webapp" / "manifest.json").write_text('{"name": "my app", "start_url": "/"}')
    (root / "webapp" / "index.html").write_text("<h1>my app</h1>")
    run_dir = root / "run"
    save_checkpoint(
        run_dir / "triplet",
        {"w": torch.ones(3)},
        {"kind": "model", "method": "triplet", "epoch": 8, "epochs": 8,
         "validation": {"metric": "map@r", "value": 0.42}},
    )  # fmt: skip
    (root / "corrupt-results").mkdir()
    (root / "corrupt-results" / "acc.json").write_text('{"kind": "accuracy", "results": [')
    rng = np.random.default_rng(0)  # a dataset small enough to train on in seconds
    for split, n in (("train", 8), ("test", 20)):
        for c in range(6):
            for i in range(n):
                img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                save_png(root / "tiny" / split / f"c{c}" / f"{i}.png", img)
    (root / "bad.png").write_bytes(png_bytes(solid((1, 2, 3), 16))[:50])
    (root / "bomb.png").write_bytes(bomb_png())
    return {
        "root": root,
        "dir": root / "mine",
        "file": root / "results.json",
        "under": root / "results.json" / "x.json",
        "new": root / "new" / "out.json",
        "newdir": root / "newdir",
        "gallery": root / "gallery",
        "index": index,
        "noted": noted,
        "webapp": root / "webapp",
        "run": run_dir,
        "tiny": root / "tiny",
        "corrupt": root / "corrupt-results",
        "bad": root / "bad.png",
        "bomb": root / "bomb.png",
    }


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A serve command that gets past its checks fails the test instead of serving forever."""
    import search.server

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the server would have started")

    monkeypatch.setattr(search.server, "serve", refuse)


CASES: list[tuple[str, Main, list[str], str]] = [
    # bench.accuracy: outputs, method names, precision, seeds and sizes, before any data loads
    ("acc-out-dir", accuracy.main, ["--methods", "pixels", "--out", "{dir}"], "is a folder"),
    ("acc-out-under-file", accuracy.main, ["--methods", "pixels", "--out", "{under}"], "is a file, not a folder"),  # noqa: E501
    ("acc-unknown-method", accuracy.main, ["--methods", "pixels,nosuch", "--out", "{new}"], "unknown method 'nosuch'"),  # noqa: E501
    ("acc-bad-precision", accuracy.main, ["--methods", "pixels", "--backend", "onnxruntime", "--precision", "bf16", "--out", "{new}"], "backend 'onnxruntime' runs fp32"),  # noqa: E501
    ("acc-negative-seed", accuracy.main, ["--seed", "-1"], "a seed is between 0 and"),
    ("acc-negative-data-seed", accuracy.main, ["--data-seed", "-5"], "--data-seed: a seed is between"),  # noqa: E501
    ("acc-image-size-0", accuracy.main, ["--image-size", "0"], "--image-size: must be >= 1"),
    ("acc-image-size-huge", accuracy.main, ["--image-size", "100000"], "must be <= 4096"),
    ("acc-episodes-0", accuracy.main, ["--episodes", "0"], "--episodes: must be >= 1"),
    ("acc-unknown-protocol", accuracy.main, ["--methods", "pixels", "--protocol", "nosuch", "--out", "{new}"], "unknown protocol"),  # noqa: E501
    ("acc-unknown-dataset", accuracy.main, ["--methods", "pixels", "--data", "nosuch", "--out", "{new}"], "unknown dataset"),  # noqa: E501
    ("acc-missing-imagefolder", accuracy.main, ["--methods", "pixels", "--data", "imagefolder:{dir}/nope", "--out", "{new}"], "does not exist"),  # noqa: E501
    # bench.parity, bench.fps, bench.classical*, bench.report
    ("parity-out-dir", parity.main, ["--method", "pixels", "--backend", "torch", "--out", "{dir}"], "is a folder"),  # noqa: E501
    ("parity-bad-precision", parity.main, ["--method", "pixels", "--backend", "openvino", "--precision", "fp16", "--out", "{new}"], "runs fp32, bf16"),  # noqa: E501
    ("parity-unknown-method", parity.main, ["--method", "nosuch", "--backend", "torch", "--out", "{new}"], "unknown method"),  # noqa: E501
    ("fps-out-under-file", fps.main, ["--method", "pixels", "--backend", "torch", "--out", "{under}"], "is a file, not a folder"),  # noqa: E501
    ("fps-bad-precision", fps.main, ["--method", "pixels", "--backend", "trt", "--precision", "bf16", "--out", "{new}"], "runs fp16, fp32"),  # noqa: E501
    ("fps-negative-seed", fps.main, ["--method", "pixels", "--backend", "torch", "--seed", "-3"], "--seed: a seed is between"),  # noqa: E501
    ("classical-out-dir", classical.main, ["--out", "{dir}"], "is a folder"),
    ("variants-out-under-file", classical_variants.main, ["--out", "{under}"], "is a file"),
    ("report-out-dir", report.main, ["--results", "{corrupt}", "--out", "{dir}"], "--out {dir} is a folder"),  # noqa: E501
    ("report-plot-under-file", report.main, ["--results", "{corrupt}", "--plot", "{under}"], "--plot"),  # noqa: E501
    ("report-only-corrupt", report.main, ["--results", "{corrupt}", "--out", "{new}"], "(1 skipped, see above)"),  # noqa: E501
    # train: outputs, seeds, and never over a finished run
    ("train-out-file", train_main, ["--method", "triplet", "--epochs", "1", "--out", "{file}"], "is a file, not a folder"),  # noqa: E501
    ("train-negative-seed", train_main, ["--method", "triplet", "--epochs", "1", "--seed", "-1"], "--seed: a seed is between"),  # noqa: E501
    ("train-resume-and-overwrite", train_main, ["--method", "triplet", "--epochs", "1", "--resume", "--overwrite"], "not allowed with"),  # noqa: E501
    ("train-over-finished-run", train_main, ["--method", "triplet", "--epochs", "1", "--depth", "20", "--data", "imagefolder:{tiny}", "--samples-per-epoch", "16", "--batch-size", "8", "--out", "{run}"], "already holds a trained triplet checkpoint (epoch 8 of 8, validation map@r 0.4200)"),  # noqa: E501
    ("train-resume-finished-run", train_main, ["--method", "triplet", "--epochs", "1", "--depth", "20", "--data", "imagefolder:{tiny}", "--samples-per-epoch", "16", "--batch-size", "8", "--resume", "--out", "{run}"], "no training state to resume"),  # noqa: E501
    ("train-epochs-0", train_main, ["--method", "triplet", "--epochs", "0"], "--epochs: must be >= 1"),  # noqa: E501
    ("train-unknown-method", train_main, ["--method", "siamese", "--epochs", "1"], "invalid choice"),  # noqa: E501
    # export, engines.build
    ("export-out-file", export_main, ["--method", "pixels", "--out", "{file}"], "is a file, not a folder"),  # noqa: E501
    ("export-unknown-method", export_main, ["--method", "nosuch", "--out", "{newdir}"], "unknown method"),  # noqa: E501
    ("engines-out-file", engines_build.main, ["--out", "{file}", "--onnx-dir", "{dir}"], "is a file, not a folder"),  # noqa: E501
    ("engines-cache-dir", engines_build.main, ["--out", "{newdir}", "--timing-cache", "{dir}"], "--timing-cache {dir} is a folder"),  # noqa: E501
    # search index: never over someone else's folder; arguments before any image is read
    ("index-rebuild-webapp", search_main, ["index", "--method", "pixels", "--images", "{gallery}", "--rebuild", "--out", "{webapp}"], "is not a search index (holds files that are not part of a search index (index.html))"),  # noqa: E501
    ("index-over-notes", search_main, ["index", "--method", "pixels", "--images", "{gallery}", "--out", "{noted}"], "(notes.txt)"),  # noqa: E501
    ("index-rebuild-over-notes", search_main, ["index", "--method", "pixels", "--images", "{gallery}", "--rebuild", "--out", "{noted}"], "(notes.txt)"),  # noqa: E501
    ("index-out-file", search_main, ["index", "--method", "pixels", "--images", "{gallery}", "--out", "{file}"], "is a file, not a folder"),  # noqa: E501
    ("index-negative-data-seed", search_main, ["index", "--method", "pixels", "--images", "shapes:test", "--data-seed", "-1", "--out", "{newdir}"], "a seed is between"),  # noqa: E501
    ("index-image-size-0", search_main, ["index", "--method", "pixels", "--images", "{gallery}", "--image-size", "0", "--out", "{newdir}"], "must be >= 1"),  # noqa: E501
    ("index-unknown-method", search_main, ["index", "--method", "nosuch", "--images", "{gallery}", "--out", "{newdir}"], "unknown method 'nosuch'"),  # noqa: E501
    ("index-method-hint", search_main, ["index", "--method", "triplet", "--images", "{gallery}", "--out", "{newdir}"], "--method triplet:PATH"),  # noqa: E501
    ("index-missing-images", search_main, ["index", "--method", "pixels", "--images", "{dir}/nope", "--out", "{newdir}"], "neither a folder"),  # noqa: E501
    # search query / serve / recall / bench / load
    ("query-min-score-nan", search_main, ["query", "{index}", "--item", "red/0.png", "--min-score", "nan"], "--min-score: must be a finite number"),  # noqa: E501
    ("query-weight-2", search_main, ["query", "{index}", "--item", "red/0.png", "--weight", "2"], "--weight: must be <= 1.0"),  # noqa: E501
    ("query-k-0", search_main, ["query", "{index}", "--item", "red/0.png", "--k", "0"], "--k: must be >= 1"),  # noqa: E501
    ("query-image-dir", search_main, ["query", "{index}", "--image", "{dir}"], "is a folder; give an image file"),  # noqa: E501
    ("query-image-corrupt", search_main, ["query", "{index}", "--image", "{bad}"], "{bad}: the PNG file is corrupt or truncated"),  # noqa: E501
    ("query-image-bomb", search_main, ["query", "{index}", "--image", "{bomb}"], "{bomb}: over Pillow's decompression-bomb limit"),  # noqa: E501
    ("query-not-an-index", search_main, ["query", "{dir}", "--item", "x"], "is not a search index"),
    ("query-unknown-item", search_main, ["query", "{index}", "--item", "nosuch.png"], "is not an item"),  # noqa: E501
    ("serve-max-upload-negative", search_main, ["serve", "{index}", "--max-upload-mb", "-1"], "--max-upload-mb: must be > 0.0"),  # noqa: E501
    ("serve-max-upload-nan", search_main, ["serve", "{index}", "--max-upload-mb", "nan"], "must be a finite number"),  # noqa: E501
    ("serve-port-70000", search_main, ["serve", "{index}", "--port", "70000"], "a port is between 0 and 65535"),  # noqa: E501
    ("serve-foreign-host", search_main, ["serve", "{index}", "--host", "192.0.2.1", "--port", "0"], "cannot listen on 192.0.2.1"),  # noqa: E501
    ("recall-out-dir", search_main, ["recall", "{index}", "--out", "{dir}"], "is a folder"),
    ("recall-negative-seed", search_main, ["recall", "{index}", "--seed", "-1"], "a seed is between"),  # noqa: E501
    ("bench-size-0", search_main, ["bench", "--sizes", "0", "--out", "{new}"], "integers >= 1"),
    ("bench-size-huge", search_main, ["bench", "--sizes", "100000000000", "--out", "{new}"], "GiB"),
    ("load-not-loopback", search_main, ["load", "{index}", "--url", "http://192.0.2.1:80", "--out", "{new}"], "only targets http:// on 127.0.0.1"),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(("name", "main", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_nothing_is_lost(
    ws: dict[str, Path],
    capsys: pytest.CaptureFixture,
    name: str,
    main: Main,
    argv: list[str],
    message: str | None,
) -> None:
    def fill(text: str) -> str:
        for key, path in ws.items():
            text = text.replace(f"{{{key}}}", str(path))
        return text

    before = snapshot(ws["root"])
    line = fails(main, [fill(a) for a in argv], capsys)
    if message is not None:
        assert fill(message) in line
    assert snapshot(ws["root"]) == before  # files written before are intact, nothing added
    assert not (ws["root"] / "new").exists() and not ws["newdir"].exists()


def test_the_corpus_is_large_and_covers_every_command() -> None:
    mains = {c[1] for c in CASES}
    assert len(CASES) >= 40
    assert mains >= {
        accuracy.main,
        parity.main,
        fps.main,
        classical.main,
        classical_variants.main,
        report.main,
        train_main,
        export_main,
        engines_build.main,
        search_main,
    }
    for sub in ("index", "query", "serve", "recall", "bench", "load"):
        assert any(c[1] is search_main and c[2][0] == sub for c in CASES)


def test_report_names_what_it_skipped(ws: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A corrupt results file next to good ones: reported by name, never silently dropped."""
    from imsim.results import make_results, record, write_json_atomic

    results = tmp_path / "results"
    rows = [record("pixels", "episodes", "top1", 0.5, ci95=0.01)]
    doc = make_results("accuracy", rows, config={}, dataset={"name": "shapes"})
    write_json_atomic(results / "good.json", doc)
    (results / "cut.json").write_text(json.dumps(doc)[:200])
    bad = {**doc, "results": [{"method": "pixels", "protocol": "seed"}]}
    write_json_atomic(results / "fields.json", bad)
    assert report.main(["--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {results / 'cut.json'}: skipped, not valid JSON" in err
    assert f"warning: {results / 'fields.json'}: skipped, a results file of kind accuracy" in err
    text = (results / "REPORT.md").read_text()
    assert "## Files not used" in text and "cut.json`: skipped, not valid JSON" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-m", "search", "query", "{index}", "--item", "red/0.png", "--min-score", "nan"],
            "finite",
        ),
        pytest.param(
            ["-m", "bench.accuracy", "--methods", "pixels", "--out", "{dir}"],
            "is a folder",
            marks=pytest.mark.slow,  # each process imports torch: about 10 s on 2 slow cores
        ),
        pytest.param(
            ["-m", "train", "--method", "triplet", "--epochs", "1", "--out", "{run}"],
            "already holds",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_real_processes_exit_2_with_one_line(
    ws: dict[str, Path], argv: list[str], message: str
) -> None:
    argv = [a.replace("{index}", str(ws["index"])).replace("{dir}", str(ws["dir"])) for a in argv]
    argv = [a.replace("{run}", str(ws["run"])) for a in argv]
    before = snapshot(ws["root"])
    p = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], p.stderr
    assert snapshot(ws["root"]) == before


# Silently wrong before the fix: each of these gave a wrong result with no error.


def _photo_tree(root: Path) -> Path:
    """An ImageFolder tree whose test/b holds a 16-bit gradient and an EXIF-rotated photo."""
    for split in ("train", "test"):
        for c, rgb in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
            save_png(root / split / c / "0.png", solid(rgb, 8))
    (root / "test" / "b" / "grad16.png").write_bytes(png_bytes(gradient16(64, 64)))
    (root / "test" / "b" / "photo.png").write_bytes(exif_rotated(upright()))
    return root


def _is_upright(img: np.ndarray) -> bool:
    """Red on top and blue below, as ``tests.images.upright`` (any size)."""
    a, q = img.astype(int), img.shape[0] // 4
    return a[:q, :, 0].mean() > 200 and a[-q:, :, 2].mean() > 200


def test_16bit_and_exif_images_decode_right_in_datasets_galleries_and_uploads(
    tmp_path: Path,
) -> None:
    from imsim.data.imagefolder import load_imagefolder
    from search.query import decode_upload

    root = _photo_tree(tmp_path / "data")
    ds = load_imagefolder(root, image_size=16)
    paths = ds.test.paths or []
    grad = ds.test.images[paths.index("test/b/grad16.png")]
    assert grad.mean() == pytest.approx(127.5, abs=1.0)  # was 254.5: nearly white
    assert _is_upright(ds.test.images[paths.index("test/b/photo.png")])  # was sideways

    gallery = open_gallery(str(root / "test"))
    keys = [it.key for it in gallery.items]
    assert gallery.image(keys.index("b/grad16.png"), 16).mean() == pytest.approx(127.5, abs=1.0)
    assert _is_upright(gallery.image(keys.index("b/photo.png"), 16))

    upload = decode_upload((root / "test" / "b" / "grad16.png").read_bytes(), 16, 10**6)
    assert upload.mean() == pytest.approx(127.5, abs=1.0)
    assert _is_upright(decode_upload(exif_rotated(upright()), 16, 10**6))


def test_an_edited_checkpoint_config_is_refused(tmp_path: Path) -> None:
    """Editing the sidecar's mean/std (or zeroing std) used to load and give chance accuracy."""
    from imsim.errors import UserError
    from imsim.models import CIFAR_MEAN, CIFAR_STD, build_network

    arch = {"name": "resnet_cifar", "depth": 20, "embedding_dim": 8, "head": "linear"}
    pre = {"input_size": 32, "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}
    w = save_checkpoint(
        tmp_path / "triplet",
        build_network(arch).state_dict(),
        {"kind": "model", "method": "triplet", "arch": arch, "preprocess": pre},
    )
    create_method(f"triplet:{w}")  # loads as written
    cfg_path = w.with_suffix(".json")
    written = cfg_path.read_text()
    for edit in ({"mean": [0.0, 0.0, 0.0]}, {"std": [0.0, 0.2, 0.2]}):
        doc = json.loads(written)
        doc["preprocess"].update(edit)
        cfg_path.write_text(json.dumps(doc, indent=2))
        with pytest.raises(UserError, match="changed after it was written") as e:
            create_method(f"triplet:{w}")
        assert "\n" not in str(e.value)


def test_a_read_only_output_folder_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission bits do not stop root, so as root the folder is made unwritable by the probe."""
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "old.json").write_text("{}")
    if os.geteuid() == 0:
        import imsim.results

        def denied(*_: object, **__: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(imsim.results.tempfile, "mkstemp", denied)
    else:
        ro.chmod(0o555)
    try:
        for main, argv in (
            (accuracy.main, ["--methods", "pixels", "--out", str(ro / "acc.json")]),
            (train_main, ["--method", "triplet", "--epochs", "1", "--out", str(ro / "run")]),
            (search_main, ["index", "--method", "pixels", "--images", "x", "--out", str(ro)]),
        ):
            line = fails(main, argv, capsys)
            assert f"cannot write in {ro} (Permission denied)" in line
    finally:
        ro.chmod(0o755)
    assert snapshot(ro) == {"old.json": b"{}"}
