from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import accuracy
from imsim.checkpoints import config_sha256, save_checkpoint
from imsim.errors import UserError
from imsim.methods import create_method, parse_methods
from imsim.models import CIFAR_MEAN, CIFAR_STD, build_network

ARCH = {"name": "resnet_cifar", "depth": 20, "embedding_dim": 64, "head": "linear"}


def _checkpoint(tmp_path: Path, method: str = "triplet", arch: dict = ARCH) -> Path:
    torch.manual_seed(0)
    net = build_network(arch)
    cfg = {
        "kind": "model",
        "method": method,
        "arch": arch,
        "preprocess": {"input_size": 32, "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)},
    }
    return save_checkpoint(tmp_path / method, net.state_dict(), cfg)


def _images(n: int = 6, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("method", ["triplet", "contrastive", "autoencoder"])
def test_registry_route_loads_a_checkpoint(tmp_path: Path, method: str) -> None:
    arch = {"name": "autoencoder"} if method == "autoencoder" else ARCH
    m = create_method(f"{method}:{_checkpoint(tmp_path, method, arch)}")
    assert m.spec.name == method and m.spec.support_aggregation == "mean"
    feats = m.embed(_images())
    assert feats.dtype == np.float32 and feats.shape == (6, m.spec.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    # as_module: the whole method, uint8 NHWC in, the same normalized embeddings out.
    out = m.as_module()(torch.from_numpy(_images())).detach().numpy()
    np.testing.assert_allclose(out, feats, atol=1e-6)


def test_trained_methods_are_not_in_all_and_need_a_path() -> None:
    assert not {"triplet", "contrastive", "autoencoder"} & set(parse_methods("all"))
    with pytest.raises(UserError, match="needs a checkpoint: --methods triplet:PATH"):
        create_method("triplet")


def test_checkpoint_with_wrong_architecture_is_refused(tmp_path: Path) -> None:
    w = _checkpoint(tmp_path)
    cfg_path = w.with_suffix(".json")
    cfg = json.loads(cfg_path.read_text())
    cfg["arch"]["depth"] = 32
    cfg["config_sha256"] = config_sha256(cfg)  # a consistent config, for the wrong weights
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="does not fit the architecture"):
        create_method(f"triplet:{w}")


def test_bench_accuracy_evaluates_a_checkpoint(tmp_path: Path) -> None:
    w = _checkpoint(tmp_path)
    out = tmp_path / "acc.json"
    accuracy.main(
        ["--methods", f"triplet:{w},pixels", "--protocol", "seed,episodes",
         "--episodes", "20", "--out", str(out)]
    )  # fmt: skip
    doc = json.loads(out.read_text())
    rows = [r for r in doc["results"] if r["method"] == "triplet"]
    assert {r["protocol"] for r in rows} == {"seed", "episodes"}
    assert all(0.0 <= r["value"] <= 1.0 for r in rows)
    assert doc["methods"]["triplet"]["checkpoint"] == str(w)
