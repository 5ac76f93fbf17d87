"""Batches built on the training device: the batched crop+flip equals torchvision's per-sample
transform, the image bank stays on the device, the loop does not wait for the device every step,
and --deterministic makes CUDA deterministic for the run only."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from imsim.models import Preprocess
from train.__main__ import build_parser
from train.batches import ImageBank, crop_flip, random_crop_flip
from train.loop import RunConfig, Trainer, deterministic_mode
from train.recipes import make_recipe


def _reference(x: torch.Tensor, pad: int, top, left, flip) -> torch.Tensor:
    """torchvision's RandomCrop(padding=pad, reflect) + RandomHorizontalFlip, one image at a
    time, with the given draws."""
    h, w = x.shape[-2:]
    out = []
    for img, t, lft, f in zip(x, top.tolist(), left.tolist(), flip.tolist(), strict=True):
        img = TF.pad(img, [pad], padding_mode="reflect")
        img = TF.crop(img, t, lft, h, w)
        out.append(TF.horizontal_flip(img) if f else img)
    return torch.stack(out)


def test_batched_crop_flip_equals_torchvision_per_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(9, 3, 32, 32, generator=g)
    pad = 4
    top = torch.tensor([0, 8, 3, 4, 0, 8, 1, 7, 5])
    left = torch.tensor([8, 0, 4, 4, 0, 8, 6, 2, 3])
    flip = torch.tensor([True, False, True, False, False, True, True, False, True])
    torch.testing.assert_close(
        crop_flip(x, pad, top, left, flip), _reference(x, pad, top, left, flip), rtol=0, atol=0
    )


def test_random_draws_cover_every_offset_and_both_flips():
    torch.manual_seed(1)
    x = torch.arange(16.0).view(1, 1, 4, 4).expand(400, 1, 4, 4).contiguous()
    out = random_crop_flip(x, pad=1)  # offsets 0..2 on each axis
    assert out.shape == x.shape
    # The crop's top-left pixel identifies (top, left, flip) on this ramp image.
    corners = {float(v) for v in out[:, 0, 0, 0]}
    padded = torch.nn.functional.pad(x[:1], (1, 1, 1, 1), mode="reflect")[0, 0]
    expected = {float(padded[t, lf]) for t in range(3) for lf in range(3)}
    expected |= {float(padded[t, lf + 3]) for t in range(3) for lf in range(3)}  # flipped
    assert corners == expected


def test_the_bank_lives_on_the_device_and_batches_are_reproducible():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(20) % 4
    bank = ImageBank(images, labels, Preprocess(32), "crop+flip", seed=0, device="cpu")
    assert bank.images.dtype == torch.uint8 and bank.images.device == bank.device
    idx = np.array([3, 1, 4, 1, 5])
    torch.manual_seed(7)
    a = bank.unit(idx)
    torch.manual_seed(7)
    b = bank.unit(idx)
    assert torch.equal(a, b)  # seeded per epoch: what --resume relies on
    assert a.shape == (5, 3, 32, 32) and a.is_contiguous(memory_format=torch.channels_last)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert bank.label_tensor(idx).tolist() == [3, 1, 0, 1, 1]
    frozen = ImageBank(images, labels, Preprocess(32), "frozen-flip", seed=0)
    # No random augmentation: the batch is the stored (once-flipped) images.
    expected = frozen.images[torch.from_numpy(idx)].permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(frozen.unit(idx), expected, rtol=0, atol=0)


def test_the_loop_reads_the_loss_back_once_per_epoch(tiny, tmp_path: Path, monkeypatch):
    """A .item() waits for the GPU; the loop's own (train/) calls must not scale with steps."""
    real = torch.Tensor.item
    calls: list[str] = []

    def item(self: torch.Tensor):
        caller = traceback.extract_stack(limit=2)[0]
        if f"{os.sep}train{os.sep}" in caller.filename:
            calls.append(f"{Path(caller.filename).name}:{caller.lineno}")
        return real(self)

    recipe = make_recipe("autoencoder", batch_size=16, samples_per_epoch=128)  # 8 steps
    cfg = RunConfig(method="autoencoder", recipe=recipe, epochs=1, out=tmp_path, data_spec="t")
    trainer = Trainer(cfg, tiny)
    monkeypatch.setattr(torch.Tensor, "item", item)
    trainer.run()
    monkeypatch.undo()
    assert 1 <= len(calls) <= 2, calls  # the epoch's loss (+ at most one progress-bar redraw)


def test_deterministic_mode_sets_and_restores_cuda_settings(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(torch.device("cpu"), True) as cpu:
        assert cpu == {} and not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(torch.device("cuda"), False) as off:
        assert off == {}
    torch.backends.cudnn.benchmark = True  # what a speed-tuned session may have set
    try:
        with deterministic_mode(torch.device("cuda"), True) as on:
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
            assert torch.are_deterministic_algorithms_enabled()
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
            assert on["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def test_deterministic_flag_and_its_default_with_resume(tiny, tmp_path: Path):
    args = build_parser().parse_args(["--method", "triplet", "--epochs", "1", "--deterministic"])
    assert args.deterministic
    assert not build_parser().parse_args(["--method", "triplet", "--epochs", "1"]).deterministic
    recipe = make_recipe("autoencoder", batch_size=32, samples_per_epoch=64)
    base = {"method": "autoencoder", "recipe": recipe, "epochs": 1, "out": tmp_path}
    assert not Trainer(RunConfig(**base), tiny).deterministic
    assert Trainer(RunConfig(**base, deterministic=True), tiny).deterministic
    assert Trainer(RunConfig(**base, resume=True), tiny).deterministic


@pytest.mark.parametrize("augment", ["crop+flip", "frozen-flip"])
def test_bank_on_an_explicit_device_string(augment):
    bank = ImageBank(
        np.zeros((4, 32, 32, 3), dtype=np.uint8), np.arange(4), Preprocess(32), augment, 0, "cpu"
    )
    assert bank.unit(np.array([0, 2])).device.type == "cpu"
