"""Training validation embeds through the runner every method uses, in the training's precision."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from imsim.methods.base import embed_all, reference_runner
from tests import nets
from train.validation import runner_precision, validation_runner


def test_the_runner_follows_the_training_autocast() -> None:
    assert runner_precision(contextlib.nullcontext()) == "fp32"
    assert runner_precision(torch.autocast("cpu", dtype=torch.bfloat16)) == "bf16"
    assert runner_precision(torch.autocast("cpu", dtype=torch.float16)) == "fp16"


def test_fp32_validation_embeds_like_the_method_and_leaves_the_module_alone() -> None:
    module = nets.make_module("test-convnet").train()
    x = nets.images(6)
    runner = validation_runner(module, contextlib.nullcontext())
    assert runner.precision == "fp32" and not module.training  # evaluated in eval mode
    got = embed_all(runner, x, batch_size=len(x))
    np.testing.assert_array_equal(got, reference_runner(module).embed(x))
    low = validation_runner(module, torch.autocast("cpu", dtype=torch.bfloat16))
    assert low.precision == "bf16" and module.body[0].weight.dtype == torch.float32
