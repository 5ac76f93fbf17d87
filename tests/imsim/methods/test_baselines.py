import numpy as np
import pytest
import torch

from imsim.errors import UserError
from imsim.methods import create_method, embed_all, list_methods, parse_methods
from imsim.methods.color_hist import rgb_histograms


def _images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_registry_lists_and_parses():
    assert {"pixels", "color-hist"} <= set(list_methods())
    assert parse_methods("pixels, color-hist,pixels") == ["pixels", "color-hist"]
    assert set(parse_methods("all")) >= {"pixels", "color-hist"}
    with pytest.raises(UserError, match="unknown method 'nope'"):
        create_method("nope")
    with pytest.raises(UserError, match="empty"):
        parse_methods(" , ")


def test_color_histogram_hand_computed():
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[0, 0, 0] = (255, 0, 0)  # bin (7, 0, 0) = 448
    img[0, 0, 1] = (255, 0, 0)
    img[0, 1, 0] = (0, 32, 255)  # bin (0, 1, 7) = 15
    img[0, 1, 1] = (31, 31, 31)  # bin (0, 0, 0)
    h = rgb_histograms(img)[0]
    assert h[448] == 0.5 and h[15] == 0.25 and h[0] == 0.25 and h.sum() == pytest.approx(1)
    emb = create_method("color-hist").embed(img)[0]
    # Hellinger: cosine of two histograms' square roots is their Bhattacharyya coefficient.
    assert emb[448] == pytest.approx(np.sqrt(0.5) / 1.0)
    assert np.linalg.norm(emb) == pytest.approx(1.0)


def test_color_hist_ignores_layout():
    a = _images(1)
    b = a[:, ::-1, ::-1]  # same pixels, rearranged
    m = create_method("color-hist")
    assert float(m.embed(a)[0] @ m.embed(np.ascontiguousarray(b))[0]) == pytest.approx(1.0)


def test_pixels_invariant_to_brightness_and_contrast():
    m = create_method("pixels")
    a = (_images(2).astype(np.float32) * 0.4 + 30).astype(np.uint8)
    b = np.round(a * 1.5 + 20).astype(np.uint8)  # affine change of every pixel, no clipping
    ea, eb = m.embed(a), m.embed(b)
    assert ea.shape == (2, 192) and ea.dtype == np.float32
    np.testing.assert_allclose((ea * eb).sum(1), 1.0, atol=1e-3)
    assert (ea[0] @ ea[1]) < 0.5


def test_pixels_module_matches_embed_and_takes_any_size():
    m = create_method("pixels")
    x = _images(3, size=48)
    out = m.as_module()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, m.embed(x), atol=1e-6)
    assert out.shape == (3, 192)


def test_embed_all_batches_and_checks_input():
    m = create_method("pixels")
    x = _images(7)
    np.testing.assert_allclose(embed_all(m, x, batch_size=3), m.embed(x), atol=1e-6)
    with pytest.raises(UserError, match="uint8"):
        embed_all(m, x.astype(np.float32))
    with pytest.raises(UserError, match=r"\(N, H, W, 3\)"):
        embed_all(m, x[..., :1])
