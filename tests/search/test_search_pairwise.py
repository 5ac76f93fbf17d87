"""Pairwise methods (classical and its parts) have no vectors: ``search index`` refuses them."""

from __future__ import annotations

from pathlib import Path

import pytest

import search.gallery
from imsim.cli import run
from search.__main__ import main


@pytest.mark.parametrize("method", ["classical", "ssim", "keypoints"])
def test_index_refuses_a_pairwise_method_up_front(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def no_gallery(*args: object, **kwargs: object) -> None:
        raise AssertionError("the gallery was opened before the method was refused")

    monkeypatch.setattr(search.gallery, "open_gallery", no_gallery)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        run(main, ["index", "--method", method, "--images", "shapes:test", "--out", "ix"])
    assert e.value.code == 2  # every user error of the CLI: one line, exit status 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(f"error: --method {method} scores pairs of images")
    assert "no vectors to index" in err and "bench.accuracy" in err
    assert list(tmp_path.iterdir()) == []  # nothing written
