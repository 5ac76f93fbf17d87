"""Loading a checkpoint back, the uint8-in image module against open_clip, the text encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from imsim.clip import LoadedClip, load_clip
from imsim.errors import UserError
from imsim.methods.base import reference_runner
from tests.clip_tiny import TINY_CFG, TINY_NAME, TINY_PREPROCESS, make_tiny_clip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module", params=["file", "local-dir"])
def clip(request: pytest.FixtureRequest, tiny: dict[str, str]) -> LoadedClip:
    """The tiny model loaded the two ways a user's checkpoint is: a file with a model name,
    or an open_clip folder (config with its preprocessing + weights)."""
    if request.param == "file":
        return load_clip(TINY_NAME, tiny["file"])
    return load_clip(f"local-dir:{tiny['dir']}", "openai")


def images(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_checkpoint_round_trip(clip: LoadedClip, tiny: dict[str, str]) -> None:
    torch.manual_seed(0)
    fresh = open_clip.create_model(TINY_NAME, pretrained=None)  # same seed as the saved one
    got = clip.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in fresh.state_dict().items())
    assert clip.weights.source in ("file", "local-dir") and not clip.weights.random
    assert clip.describe()["random_weights"] is False


def test_embeddings_shape_dtype_norm(clip: LoadedClip) -> None:
    feats = reference_runner(clip.image).embed(images())
    raw = reference_runner(clip.image_module(normalize=False)).embed(images())
    np.testing.assert_allclose(feats, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    assert feats.shape == (5, TINY_CFG["embed_dim"]) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert clip.embedding_dim == TINY_CFG["embed_dim"]


def test_uint8_forward_equals_open_clip_preprocess_and_encode(clip: LoadedClip) -> None:
    x = images(8, seed=3)
    tf = image_transform_v2(PreprocessCfg(**clip.model.visual.preprocess_cfg), is_train=False)
    with torch.inference_mode():
        ref = clip.model.encode_image(
            torch.stack([tf(Image.fromarray(a)) for a in x]), normalize=True
        ).numpy()
    got = clip.image(torch.from_numpy(x)).numpy()
    # Inputs differ by at most one uint8 level on a few pixels (PIL's fixed-point resize).
    cos = (got * ref).sum(axis=1)
    assert cos.min() > 0.9999
    assert np.abs(got - ref).max() < 5e-3


def test_declared_preprocessing_is_used(tiny: dict[str, str]) -> None:
    clip = load_clip(f"local-dir:{tiny['dir']}", "openai")
    pre = clip.image.preprocess
    assert pre.output_size == (64, 64)
    np.testing.assert_allclose(
        pre.mean.flatten().numpy(), np.array(TINY_PREPROCESS["mean"]) * 255, rtol=1e-6
    )
    np.testing.assert_allclose(
        pre.std.flatten().numpy(), np.array(TINY_PREPROCESS["std"]) * 255, rtol=1e-6
    )


def test_text_embeddings_are_normalized_and_encoded_once(
    clip: LoadedClip, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    encode = clip.model.encode_text

    def counting(tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        calls.append(len(tokens))
        return encode(tokens, normalize=normalize)

    monkeypatch.setattr(clip.model, "encode_text", counting)
    texts = [f"a photo of thing {i} number {len(calls)}" for i in range(3)]
    a = clip.embed_text(texts + texts[:1])
    assert a.shape == (4, TINY_CFG["embed_dim"]) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a[0], a[3])
    b = clip.embed_text(texts[::-1])
    np.testing.assert_array_equal(b, a[2::-1])
    assert calls == [3]  # three distinct texts, encoded in one batch, then served from memory


def test_random_weights_are_marked(tiny: dict[str, str]) -> None:
    clip = load_clip(TINY_NAME, "none")
    assert clip.weights.random and clip.describe()["random_weights"] is True


def test_wrong_or_corrupt_checkpoint_is_one_line_error(
    tiny: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "imsim-tiny-clip-wide.json"  # another architecture
    other.write_text(json.dumps({**TINY_CFG, "embed_dim": 48}))
    open_clip.add_model_config(other)
    with pytest.raises(UserError, match="could not load imsim-tiny-clip-wide from") as err:
        load_clip("imsim-tiny-clip-wide", tiny["file"])
    assert "\n" not in str(err.value)
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=f"could not load {TINY_NAME} from"):
        load_clip(TINY_NAME, str(bad))
