"""SimCLR views: per-sample draws that equal torchvision's formulas, and the recipe options."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from imsim.models import Preprocess
from train.augment import color_jitter, resized_crop, simclr_views
from train.batches import ImageBank
from train.objectives import Objective
from train.recipes import make_recipe


def _batch(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_full_crop_is_the_identity_and_flip_mirrors():
    x = _batch()
    one, zero = torch.ones(4), torch.zeros(4)
    no = torch.zeros(4, dtype=torch.bool)
    torch.testing.assert_close(resized_crop(x, one, one, zero, zero, no), x)
    torch.testing.assert_close(resized_crop(x, one, one, zero, zero, ~no), x.flip(-1))
    # Half the area, square, centred: the middle 11x11-ish window resized up, not the identity.
    half = resized_crop(x, one / 2, one, zero, zero, no)
    assert (half - x).abs().max() > 0.05


def test_colour_jitter_equals_torchvision_per_sample():
    x = _batch()
    b, c, s = torch.tensor([1.3, 0.8, 1.0, 1.1]), torch.tensor([0.7, 1.2, 1.0, 0.9]), torch.ones(4)
    s[0] = 1.4
    gray = torch.tensor([False, False, False, True])
    out = color_jitter(x, b, c, s, gray)
    for i in range(4):
        ref = TF.adjust_brightness(x[i], float(b[i]))
        ref = TF.adjust_contrast(ref, float(c[i]))
        ref = TF.adjust_saturation(ref, float(s[i]))
        if gray[i]:
            ref = TF.rgb_to_grayscale(ref, num_output_channels=3)
        torch.testing.assert_close(out[i], ref, atol=1e-6, rtol=0)


def test_views_differ_per_sample_and_stay_in_range():
    torch.manual_seed(0)
    x = _batch(1).expand(8, -1, -1, -1).contiguous()
    v = simclr_views(x)
    assert v.shape == x.shape and float(v.min()) >= 0 and float(v.max()) <= 1
    # Eight copies of one image get eight different views.
    flat = v.flatten(1)
    assert len({tuple(np.round(r.numpy(), 4)) for r in flat}) == 8


def test_ssl_objective_sees_two_views_per_image(tiny):
    recipe = make_recipe("triplet", depth=20, augment="simclr", ssl_weight=1.0, projection_dim=16)
    assert recipe.loss["ssl"] == {"name": "ntxent", "temperature": 0.2, "weight": 1.0}
    assert recipe.arch["projection_dim"] == 16 and recipe.augment == "simclr"
    bank = ImageBank(tiny.train.images, tiny.train.labels, Preprocess(), "simclr", 0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 8))
    net.project = lambda e: e
    obj = Objective(recipe, contextlib.nullcontext)
    idx = np.arange(8)
    loss, n = obj(net, bank, idx)
    assert n == 16 and torch.isfinite(loss) and float(loss.detach()) > 0
    plain = Objective(make_recipe("triplet", depth=20), contextlib.nullcontext)
    assert plain.ssl is None and plain(net, bank, idx)[1] == 8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "seed", "augment": "simclr"}, "seed recipe"),
        ({"augment": "mixup"}, "unknown augmentation"),
        ({"ssl_weight": -1.0}, "ssl-weight"),
        ({"ssl_weight": float("nan")}, "ssl-weight"),
        ({"arch": "vit-tiny", "projection_dim": 16}, "projection-dim"),
    ],
)
def test_bad_recipe_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_recipe("triplet", **kwargs)


def test_ntxent_equals_pytorch_metric_learning():
    from pytorch_metric_learning import losses

    from train.objectives import NTXent

    emb = torch.randn(24, 8, generator=torch.Generator().manual_seed(1))
    ref = losses.NTXentLoss(temperature=0.2)(emb, torch.arange(12).repeat(2))
    torch.testing.assert_close(NTXent(0.2)(emb), ref, atol=1e-5, rtol=1e-5)
    # Views that agree exactly and differ from all others give a lower loss than shuffled ones.
    views = torch.eye(12).repeat(2, 1)
    assert float(NTXent(0.2)(views)) < float(NTXent(0.2)(views[torch.randperm(24)]))
