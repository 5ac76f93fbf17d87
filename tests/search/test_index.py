"""Index build, incremental re-index, atomic writes and load-time checks."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imsim.errors import UserError
from imsim.methods import create_method
from imsim.methods.pixels import PixelsEmbedder
from search.gallery import DatasetGallery, FolderGallery, ZipGallery, open_gallery
from search.index import (
    EMBEDDINGS,
    MANIFEST,
    BuildReport,
    build_index,
    load_index,
    model_options,
)
from search.query import Searcher
from tests.search.helpers import save_png, solid

OPTS = {"recipe": "default", "clip_model": "ViT-B-32", "pretrained": "openai"}


def _build(gallery_path: Path, out: Path, method: str = "pixels", **kw: Any) -> BuildReport:
    return build_index(
        open_gallery(str(gallery_path)), out, create_method(method), method, OPTS, **kw
    )


def test_folder_gallery_lists_images_with_labels(shapes_folder: Path) -> None:
    (shapes_folder / "notes.txt").write_text("not an image")
    save_png(shapes_folder / "top.png", solid((1, 2, 3)))
    g = FolderGallery(shapes_folder)
    assert len(g.items) == 61
    assert g.items[0].key.endswith(".png") and g.items[0].label == g.items[0].key.split("/")[0]
    assert [it.label for it in g.items if it.key == "top.png"] == [None]


def test_round_trip_every_image_finds_itself(shapes_folder: Path, tmp_path: Path) -> None:
    rep = _build(shapes_folder, tmp_path / "ix")
    assert (rep.embedded, rep.reused, rep.removed) == (60, 0, 0)
    index = load_index(tmp_path / "ix")
    assert index.vectors.shape == (60, 192)
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)
    searcher = Searcher(index)
    for i, it in enumerate(index.items):
        img = FolderGallery(shapes_folder).image_by_key(it.key)
        hits = searcher.search(searcher.query_vector(image=img), k=3)
        assert hits[0].row == i and hits[0].key == it.key and hits[0].label == it.label
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[1].score <= hits[0].score


def test_reindex_embeds_only_new_and_changed(shapes_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    _build(shapes_folder, out)
    first = load_index(out)
    files = sorted(shapes_folder.rglob("*.png"))
    changed, removed = files[0], files[1]
    save_png(changed, solid((250, 10, 10), 32))
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse-grained file systems
    removed.unlink()
    save_png(shapes_folder / "new" / "x.png", solid((10, 250, 10), 32))

    rep = _build(shapes_folder, out)
    assert (rep.embedded, rep.reused, rep.removed) == (2, 58, 1)
    second = load_index(out)
    assert len(second) == 60
    fresh = _build(shapes_folder, tmp_path / "fresh").index
    assert [it.key for it in second.items] == [it.key for it in fresh.items]
    np.testing.assert_array_equal(second.vectors, fresh.vectors)
    key0 = changed.relative_to(shapes_folder).as_posix()
    assert not np.allclose(
        second.vectors[second.position(key0)], first.vectors[first.position(key0)]
    )


def test_reindex_with_other_settings_needs_rebuild(shapes_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    _build(shapes_folder, out)
    with pytest.raises(UserError, match="--rebuild"):
        _build(shapes_folder, out, method="color-hist")
    with pytest.raises(UserError, match="--rebuild"):
        _build(shapes_folder, out, dtype="float16")
    rep = _build(shapes_folder, out, method="color-hist", rebuild=True)
    assert rep.embedded == 60 and load_index(out).method["name"] == "color-hist"


def test_float16_index(shapes_folder: Path, tmp_path: Path) -> None:
    a = _build(shapes_folder, tmp_path / "a").index
    b = _build(shapes_folder, tmp_path / "b", dtype="float16").index
    assert np.load(tmp_path / "b" / EMBEDDINGS).dtype == np.float16
    np.testing.assert_allclose(a.vectors, b.vectors, atol=2e-3)


def test_failed_build_leaves_previous_index(shapes_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    _build(shapes_folder, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    save_png(shapes_folder / "new" / "x.png", solid((1, 2, 3)))

    class Boom(PixelsEmbedder):
        def embed(self, images: np.ndarray) -> np.ndarray:
            raise RuntimeError("embedding failed")

    with pytest.raises(RuntimeError):
        build_index(open_gallery(str(shapes_folder)), out, Boom(), "pixels", OPTS)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery", "ix"]  # no temp folders


def test_manifest_records_provenance(shapes_folder: Path, tmp_path: Path) -> None:
    _build(shapes_folder, tmp_path / "ix", image_size=24)
    m = json.loads((tmp_path / "ix" / MANIFEST).read_text())
    # The model options the method declares (pixels: none; device and batch size are runtime).
    assert m["method"]["item"] == "pixels" and m["method"]["options"] == {}
    assert m["method"]["id"] == "pixels" and m["method"]["text"] is False
    clip_options = model_options("clip", {**OPTS, "device": "cuda", "batch_size": 8, "ways": 5})
    assert clip_options == OPTS
    assert m["preprocessing"]["image_size"] == 24
    assert m["source"] == {"kind": "folder", "path": str(shapes_folder.resolve()), "under": None}
    assert m["embeddings"]["shape"] == [60, 192] and len(m["embeddings"]["sha256"]) == 64
    assert {"key", "label", "fingerprint"} <= set(m["items"][0])


def test_corrupt_embeddings_are_refused(shapes_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    _build(shapes_folder, out)
    emb = out / EMBEDDINGS
    data = bytearray(emb.read_bytes())
    data[-1] ^= 0xFF
    emb.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum"):
        load_index(out)


def test_unreadable_images_are_skipped(shapes_folder: Path, tmp_path: Path) -> None:
    (shapes_folder / "bad").mkdir()
    (shapes_folder / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rep = _build(shapes_folder, tmp_path / "ix")
    assert len(rep.index) == 60
    assert [s["key"] for s in rep.skipped] == ["bad/broken.png"]


def test_output_that_is_not_an_index_is_refused(shapes_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="not a search index"):
        _build(shapes_folder, out)
    assert (out / "thesis.tex").read_text() == "x"


def test_zip_gallery_under_a_folder(shapes_folder: Path, tmp_path: Path) -> None:
    zpath = tmp_path / "g.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(shapes_folder.rglob("*.png")):
            z.write(p, "test/" + p.relative_to(shapes_folder).as_posix())
        z.writestr("train/red_circle/0.png", b"x")  # excluded by --under
    g = open_gallery(str(zpath), under="test")
    assert isinstance(g, ZipGallery) and len(g.items) == 60
    folder_index = _build(shapes_folder, tmp_path / "a").index
    zip_index = build_index(g, tmp_path / "b", create_method("pixels"), "pixels", OPTS).index
    np.testing.assert_array_equal(folder_index.vectors, zip_index.vectors)
    assert [it.label for it in folder_index.items] == [it.label for it in zip_index.items]


def test_dataset_gallery(tmp_path: Path) -> None:
    g = open_gallery("shapes:test")
    assert isinstance(g, DatasetGallery) and len(g.items) == 10_000 and g.native_size == 32
    assert g.items[0].key == "test/000000" and g.items[0].label in g._class_names
    with pytest.raises(UserError, match="split"):
        open_gallery("shapes:val")
    with pytest.raises(UserError, match="neither"):
        open_gallery(str(tmp_path / "missing"))


def test_an_index_from_before_declared_options_is_reused_and_queried(
    shapes_folder: Path, tmp_path: Path
) -> None:
    # Manifests written before methods declared their options recorded every model flag and no
    # id: the same model still, so a rebuild reuses every row and a query re-creates the method.
    out = tmp_path / "ix"
    _build(shapes_folder, out)
    path = out / MANIFEST
    m = json.loads(path.read_text())
    del m["method"]["id"]
    m["method"]["options"] = dict(OPTS)
    path.write_text(json.dumps(m))
    rep = _build(shapes_folder, out)
    assert rep.reused == 60 and rep.embedded == 0
    s = Searcher(load_index(out))
    assert s.search(s.query_vector(item=s.index.items[0].key), k=1)[0].row == 0
