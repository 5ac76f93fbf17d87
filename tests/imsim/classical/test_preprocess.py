"""The study's upsampling and grayscale conversions."""

from __future__ import annotations

import cv2
import numpy as np
import torchvision.transforms as T
from PIL import Image

from imsim.classical.preprocess import seed_upsample, to_gray


def test_seed_upsample_is_the_studys_transform():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    ours = seed_upsample(imgs, 40, batch=2)
    # The study: ToTensor, Resize((size, size)), then (x.permute * 255).numpy().astype(uint8).
    tf = T.Compose([T.ToTensor(), T.Resize((40, 40))])
    for i in range(3):
        ref = (tf(Image.fromarray(imgs[i])).permute(1, 2, 0) * 255).numpy().astype(np.uint8)
        np.testing.assert_array_equal(ours[i], ref)
    assert seed_upsample(imgs, 8) is imgs  # already the right size


def test_gray_orders_match_opencv():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    for i in range(2):
        np.testing.assert_array_equal(
            to_gray(imgs, "rgb")[i], cv2.cvtColor(imgs[i], cv2.COLOR_RGB2GRAY)
        )
        np.testing.assert_array_equal(
            to_gray(imgs, "bgr")[i], cv2.cvtColor(imgs[i], cv2.COLOR_BGR2GRAY)
        )
    red = np.zeros((1, 1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert to_gray(red, "rgb")[0, 0, 0] == 76  # 0.299 * 255
    assert to_gray(red, "bgr")[0, 0, 0] == 29  # 0.114 * 255: the study's swapped weights
