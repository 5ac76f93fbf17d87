"""``python -m search``: the commands end to end, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imsim.cli import run
from search.__main__ import main


def test_index_then_query(
    shapes_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "ix"
    index = ["index", "--method", "color-hist", "--images", str(shapes_folder), "--out", str(out)]
    index += ["--image-size", "32", "--dtype", "float16"]
    assert main(index) == 0
    assert "60 items (60 embedded, 0 unchanged" in capsys.readouterr().out
    assert main(index) == 0  # the same command again: nothing to embed
    assert "(0 embedded, 60 unchanged, 0 removed" in capsys.readouterr().out

    query = sorted(shapes_folder.rglob("*.png"))[7]
    assert main(["query", str(out), "--image", str(query), "--k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and hits[0]["key"] == query.relative_to(shapes_folder).as_posix()
    assert hits[0]["score"] == pytest.approx(1.0, abs=2e-3)  # float16 storage

    assert main(["query", str(out), "--item", hits[1]["key"], "--k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["rank", "score", "label", "key"] and len(table) == 3
    assert table[1].split()[3] == hits[1]["key"]


def test_text_query_through_the_registry(
    tmp_path: Path, color_words: type, capsys: pytest.CaptureFixture
) -> None:
    from tests.search.helpers import save_png, solid

    for name, rgb in {"red": (250, 0, 0), "blue": (0, 0, 250)}.items():
        save_png(tmp_path / "g" / name / "0.png", solid(rgb))
    main(
        [
            "index",
            "--method",
            "color-words",
            "--images",
            str(tmp_path / "g"),
            "--out",
            str(tmp_path / "ix"),
        ]
    )
    capsys.readouterr()
    main(["query", str(tmp_path / "ix"), "--text", "blue", "--k", "1", "--json"])
    assert json.loads(capsys.readouterr().out)[0]["label"] == "blue"


@pytest.mark.parametrize(
    "argv",
    [
        ["index", "--method", "pixels", "--images", "nowhere/", "--out", "x"],
        ["index", "--method", "no-such", "--images", "shapes:test", "--out", "x"],
        ["query", "not-an-index", "--text", "x"],
        ["bench", "--sizes", "ten"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        run(main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_query_with_text_on_image_method(
    shapes_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main(
        [
            "index",
            "--method",
            "pixels",
            "--images",
            str(shapes_folder),
            "--out",
            str(tmp_path / "ix"),
        ]
    )
    with pytest.raises(SystemExit):
        run(main, ["query", str(tmp_path / "ix"), "--item", "x", "--text", "red"])
    assert "no text encoder" in capsys.readouterr().err


def test_recall_and_bench_write_results(
    shapes_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("faiss")
    ix = tmp_path / "ix"
    main(["index", "--method", "pixels", "--images", str(shapes_folder), "--out", str(ix)])
    # 60 vectors: one list; probing it is exact search
    assert (
        main(
            [
                "recall",
                str(ix),
                "--queries",
                "20",
                "--nprobe",
                "1",
                "--out",
                str(tmp_path / "recall.json"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "recall.json").read_text())
    assert doc["kind"] == "search-recall"
    faiss_row = next(r for r in doc["results"] if r["method"] == "faiss-ivf")
    assert faiss_row["recall@10"] == 1.0 and faiss_row["nlist"] == 1
    assert (
        main(
            [
                "bench",
                "--sizes",
                "2000",
                "--dim",
                "16",
                "--queries",
                "10",
                "--nprobe",
                "2,64",
                "--out",
                str(tmp_path / "lat.json"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "lat.json").read_text())
    rows = doc["results"]
    assert [r["method"] for r in rows] == ["exact", "faiss-ivf", "faiss-ivf"]
    assert all(r["n_vectors"] == 2000 and r["value"] > 0 for r in rows)
    assert rows[2]["recall@10"] == 1.0 and rows[2]["nprobe"] == rows[2]["nlist"] == 45
    assert "| 2,000 | exact |" in capsys.readouterr().out
