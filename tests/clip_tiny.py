"""A tiny open_clip model with random weights, saved the way real weights are distributed.

Tests load it back through ``imsim.clip.load_clip`` (the path a user's checkpoint takes), so
nothing is downloaded and everything runs in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

TINY_NAME = "imsim-tiny-clip"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
# Not open_clip's defaults, so a test can see that the declared preprocessing is the one used.
TINY_PREPROCESS = {
    "mean": [0.5, 0.4, 0.3],
    "std": [0.2, 0.25, 0.3],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def make_tiny_clip(root: Path) -> dict[str, str]:
    """Write the tiny model as a weights file (+ its model config registered with open_clip)
    and as an open_clip ``local-dir`` folder; returns their paths."""
    root.mkdir(parents=True, exist_ok=True)
    cfg_file = root / f"{TINY_NAME}.json"
    cfg_file.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg_file)  # makes TINY_NAME a known model name
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_NAME, pretrained=None)
    weights = root / "tiny.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    folder = root / "tiny-dir"
    folder.mkdir(exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": TINY_PREPROCESS})
    )
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return {"file": str(weights), "dir": str(folder)}
