"""The uint8-in preprocessing module against open_clip's own PIL transform, and its export."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from imsim.clip.preprocess import ClipPreprocess

CFGS = [
    {"size": 224},  # open_clip's default (OpenAI CLIP): shortest edge, bicubic, center crop
    {"size": 96, "interpolation": "bilinear", "mean": (0.0,) * 3, "std": (1.0,) * 3},
    {"size": 64, "resize_mode": "squash", "mean": (0.5,) * 3, "std": (0.5,) * 3},
    {"size": 64, "resize_mode": "longest", "fill_color": 128},
    {"size": (48, 64)},
]
SIZES = [(32, 32), (32, 45), (300, 260)]


def reference(images: np.ndarray, cfg: PreprocessCfg) -> torch.Tensor:
    tf = image_transform_v2(cfg, is_train=False)
    return torch.stack([tf(Image.fromarray(a)) for a in images])


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("overrides", CFGS)
def test_matches_open_clip_transform(overrides: dict, hw: tuple[int, int]) -> None:
    cfg = PreprocessCfg(**overrides)
    # Uniform noise: the worst case for resampling (every pixel an edge).
    images = np.random.default_rng(0).integers(0, 256, (3, *hw, 3), dtype=np.uint8)
    ref = reference(images, cfg)
    out = ClipPreprocess(vars(cfg))(torch.from_numpy(images))
    assert out.shape == ref.shape and out.dtype == torch.float32
    # In uint8 levels: PIL's fixed-point weights round a few values the other way.
    levels = ((out - ref) * torch.tensor(cfg.std).view(1, 3, 1, 1) * 255).abs()
    assert levels.max() <= 1.0 + 1e-3
    assert (levels > 0.5).float().mean() < 0.01


def test_declared_normalization_is_applied() -> None:
    images = np.full((1, 32, 32, 3), 255, dtype=np.uint8)
    out = ClipPreprocess({"size": 64, "mean": (0.5, 0.0, 1.0), "std": (0.5, 0.25, 1.0)})(
        torch.from_numpy(images)
    )
    assert out.shape == (1, 3, 64, 64)
    assert torch.allclose(out[0, :, 10, 10], torch.tensor([1.0, 4.0, 0.0]), atol=1e-5)


def test_exports_to_onnx_and_matches() -> None:
    module = ClipPreprocess({"size": 224, "mean": (0.5,) * 3, "std": (0.5,) * 3}).eval()
    images = torch.from_numpy(
        np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    )
    module(images)  # build the resampling matrices first, so the graph holds them as constants
    buf = io.BytesIO()
    torch.onnx.export(
        module,
        (images,),
        buf,
        opset_version=17,
        dynamo=False,
        input_names=["images"],
        dynamic_axes={"images": {0: "n"}},
    )
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert not ops & {"NonZero", "ScatterND"}  # not rebuilt on every run (export.graph.warm)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    batch = np.concatenate([images.numpy()] * 2)  # another batch size than traced
    got = sess.run(None, {"images": batch})[0]
    want = module(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_autocast_leaves_preprocessing_in_fp32(dtype: torch.dtype) -> None:
    # Backends run whole method modules under autocast; the PIL-exact resampling must not follow.
    pre = ClipPreprocess(dict(PreprocessCfg(size=224).__dict__))
    x = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    ref = pre(x)
    with torch.autocast("cpu", dtype=dtype):
        out = pre(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
