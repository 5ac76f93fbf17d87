"""Batched, per-sample image augmentation on the training device: SimCLR's view recipe.

``simclr_views`` draws what SimCLR (Chen et al., 2020) uses for CIFAR: a random resized crop
(area 20-100 %, aspect 3/4-4/3), a horizontal flip, colour jitter (brightness, contrast,
saturation 0.4, applied with probability 0.8) and grayscale with probability 0.2, with its own
draws for every sample.

Why not torchvision: its transforms draw one set of parameters per call, so a batch would either
share one crop and one jitter or need a Python loop of hundreds of small ops per batch on the
device (what ``train.batches`` avoids). The colour operations below are torchvision's formulas
(``adjust_brightness/contrast/saturation``, ``rgb_to_grayscale``) with a factor per sample, and
the crop is ``affine_grid`` + bilinear ``grid_sample``, which is what a resized crop is. The
jitter is applied in a fixed order (brightness, contrast, saturation) rather than torchvision's
random order, and without hue, whose HSV round trip is costly and helps little on CIFAR.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend``: factor * x + (1 - factor) * other, clamped to [0, 1]."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def color_jitter(
    x: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    to_gray: torch.Tensor,
) -> torch.Tensor:
    """Per-sample brightness, contrast and saturation factors (N,) then grayscale where
    ``to_gray`` (N,) bool; ``x`` is (N, 3, H, W) in [0, 1]. A factor of 1 leaves a sample as is."""
    x = _blend(x, torch.zeros_like(x), brightness)
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    x = _blend(x, mean.expand_as(x), contrast)
    x = _blend(x, grayscale(x).expand_as(x), saturation)
    return torch.where(to_gray.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)


def resized_crop(
    x: torch.Tensor,
    scale: torch.Tensor,
    ratio: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    flip: torch.Tensor,
) -> torch.Tensor:
    """Per-sample crops of ``x`` (N, C, H, W) covering ``scale`` (N,) of its area with aspect
    ``ratio`` (N,) (width / height), centred at (``cx``, ``cy``) in [-1, 1] coordinates (kept
    inside the image), mirrored where ``flip``, resized back to H x W (bilinear)."""
    w = torch.sqrt(scale * ratio).clamp(max=1.0)
    h = torch.sqrt(scale / ratio).clamp(max=1.0)
    cx = cx * (1 - w)  # the crop stays inside the image
    cy = cy * (1 - h)
    sx = torch.where(flip, -w, w)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def simclr_views(x: torch.Tensor, strength: float = 0.4) -> torch.Tensor:
    """One SimCLR view per sample of ``x`` (N, 3, H, W) in [0, 1], drawn from torch's (CPU)
    generator so a batch is the same on every device."""
    n = len(x)
    dev = x.device
    scale = 0.2 + 0.8 * torch.rand(n)
    log_r = (torch.rand(n) * 2 - 1) * math.log(4 / 3)
    centre = torch.rand(2, n) * 2 - 1
    flip = torch.rand(n) < 0.5
    jitter = torch.rand(n) < 0.8
    factors = 1 + (torch.rand(3, n) * 2 - 1) * strength
    factors = torch.where(jitter[None, :], factors, torch.ones_like(factors))
    gray = torch.rand(n) < 0.2
    x = resized_crop(
        x, scale.to(dev), log_r.exp().to(dev), centre[0].to(dev), centre[1].to(dev), flip.to(dev)
    )
    return color_jitter(x, *(f.to(dev) for f in factors), gray.to(dev))
