"""Image preparation for the classical pipeline: the study's upsampling and grayscale variants."""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as TF

GRAYS = ("rgb", "bgr")


def seed_upsample(images: np.ndarray, size: int, batch: int = 64) -> np.ndarray:
    """Resize uint8 (N, H, W, 3) images to ``size`` x ``size`` exactly as the reference study.

    The study applies torchvision's ``Resize((size, size))`` (bilinear) to ``ToTensor()`` output
    (x / 255 as float32), then multiplies by 255 and casts to uint8, which truncates rather than
    rounds; the same operations are used here so the pixels are identical.
    """
    n, height, width, _ = images.shape
    if (height, width) == (size, size):
        return images
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    with torch.inference_mode():
        for i in range(0, n, batch):
            x = torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).float().div(255)
            y = TF.resize(x, [size, size], antialias=True)
            # float -> uint8 conversion truncates, like numpy's astype in the study.
            out[i : i + batch] = y.mul_(255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def to_gray(images: np.ndarray, order: str = "rgb") -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> uint8 (N, H, W) luma with OpenCV's rounding.

    ``order="rgb"`` is ``cv2.COLOR_RGB2GRAY`` (0.299 R + 0.587 G + 0.114 B). ``order="bgr"`` is
    ``cv2.COLOR_BGR2GRAY`` applied to RGB pixels, i.e. red and blue weights swapped: what the
    study's SSIM term computes (it converts its RGB images with the BGR code).
    """
    import cv2

    if order not in GRAYS:
        raise ValueError(f"gray order must be one of {GRAYS}, got {order!r}")
    n, height, width, _ = images.shape
    if n == 0:
        return np.zeros((0, height, width), dtype=np.uint8)
    code = cv2.COLOR_RGB2GRAY if order == "rgb" else cv2.COLOR_BGR2GRAY
    # One call over all images stacked as rows.
    flat = np.ascontiguousarray(images).reshape(n * height, width, 3)
    return cv2.cvtColor(flat, code).reshape(n, height, width)
