"""The one decoding policy (``imsim.data.images``): 16-bit scaled, EXIF applied, bombs refused by
name, and the same pixels whether an image comes from a dataset, a gallery or an upload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imsim.data.imagefolder import load_imagefolder
from imsim.data.images import ImageError, ImageTooLarge, decode_image, open_rgb
from search.gallery import open_gallery
from search.query import RequestTooLarge, decode_upload
from tests.images import bomb_png, exif_rotated, gradient16, png_bytes, truncated, upright
from tests.search.helpers import save_png, solid


def test_16bit_png_is_scaled_not_clipped() -> None:
    img = decode_image(png_bytes(gradient16()), 64)
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert img.mean() == pytest.approx(127.5, abs=0.6)  # Pillow's own convert gives 254.5
    row = img[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)


def test_16bit_tiff_and_32bit_modes_are_scaled() -> None:
    import io

    for array in (gradient16().astype(np.int32), gradient16().astype(np.float32) / 65535):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="TIFF")
        assert decode_image(buf.getvalue(), 64).mean() == pytest.approx(127.5, abs=0.6)


def test_exif_orientation_is_applied() -> None:
    for fmt in ("PNG", "JPEG"):
        img = open_rgb(exif_rotated(upright(), fmt))
        assert img.size == (16, 32)  # portrait, as every viewer shows it
        a = np.asarray(img).astype(int)
        assert a[:12, :, 0].mean() > 200 and a[:12, :, 2].mean() < 50  # red on top
        assert a[-12:, :, 2].mean() > 200 and a[-12:, :, 0].mean() < 50  # blue below


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest resets filters
def test_bombs_are_refused_from_the_header_with_the_name() -> None:
    for w, h in ((15000, 15000), (10000, 10000)):  # over 2x and over 1x Pillow's limit
        with pytest.raises(ImageTooLarge, match=r"^big\.png: ") as e:
            decode_image(bomb_png(w, h), 32, name="big.png")
        assert "BytesIO" not in str(e.value)
    with pytest.raises(ImageTooLarge, match="200x100 = 20,000 pixels"):
        decode_image(png_bytes(np.zeros((100, 200, 3), np.uint8)), 8, max_pixels=10_000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image", "not an image in a format"),
        (truncated(png_bytes(np.full((64, 64, 3), 7, np.uint8))), "corrupt or truncated"),
    ],
)
def test_bad_files_name_the_file_never_a_bytesio(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message) as e:
        decode_image(data, 8, name="cat.png")
    assert str(e.value).startswith("cat.png: ")
    assert "BytesIO" not in str(e.value) and "\n" not in str(e.value)


def _tree(root: Path, extra: dict[str, bytes]) -> Path:
    for split in ("train", "test"):
        for c, rgb in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
            for i in range(2):
                save_png(root / split / c / f"{i}.png", solid(rgb, 8))
    for rel, data in extra.items():
        (root / rel).write_bytes(data)
    return root


def test_imagefolder_skips_a_bomb_by_name_and_decodes_16bit_and_exif(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = _tree(
        tmp_path / "data",
        {
            "test/a/big.png": bomb_png(),
            "test/a/grad16.png": png_bytes(gradient16(64, 64)),
            "test/b/photo.png": exif_rotated(upright()),
            "test/b/junk.png": b"junk",
        },
    )
    ds = load_imagefolder(root, image_size=16)
    err = capsys.readouterr().err
    assert "test/a/big.png: " in err and "over Pillow's decompression-bomb limit" in err
    assert "test/b/junk.png: not an image" in err and "BytesIO" not in err
    paths = ds.test.paths or []
    assert "test/a/big.png" not in paths and ds.info["skipped"] == [
        "test/a/big.png",
        "test/b/junk.png",
    ]
    grad = ds.test.images[paths.index("test/a/grad16.png")]
    assert grad.mean() == pytest.approx(127.5, abs=1.0)
    photo = ds.test.images[paths.index("test/b/photo.png")].astype(int)
    assert photo[:6, :, 0].mean() > 200 and photo[-6:, :, 2].mean() > 200  # upright


def test_dataset_gallery_and_upload_decode_alike(tmp_path: Path) -> None:
    files = {
        "g/x/grad16.png": png_bytes(gradient16(64, 64)),
        "g/x/photo.png": exif_rotated(upright()),
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    gallery = open_gallery(str(tmp_path / "g"))
    keys = [it.key for it in gallery.items]
    for rel, data in files.items():
        from_gallery = gallery.image(keys.index(rel.removeprefix("g/")), 24)
        np.testing.assert_array_equal(from_gallery, decode_upload(data, 24))
        np.testing.assert_array_equal(from_gallery, decode_image(data, 24))
    grad = gallery.image(keys.index("x/grad16.png"), 24)
    photo = gallery.image(keys.index("x/photo.png"), 24).astype(int)
    assert grad.mean() == pytest.approx(127.5, abs=1.0)
    assert photo[:8, :, 0].mean() > 200 and photo[-8:, :, 2].mean() > 200
    with pytest.raises(RequestTooLarge, match="upload"):
        decode_upload(bomb_png(), 24)
