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
    mid = rows[0]["method_id"]
    assert mid == f"triplet.{w.parent.name}-r20" and {r["method_id"] for r in rows} == {mid}
    assert doc["methods"][mid]["checkpoint"] == str(w)


def _cfg(arch: dict = ARCH) -> dict:
    pre = {"input_size": 32, "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}
    return {"kind": "model", "method": "triplet", "arch": arch, "preprocess": pre}


def test_a_checkpoint_has_an_id_from_its_folder_and_network(tmp_path: Path) -> None:
    shapes = _checkpoint(tmp_path / "shapes")
    assert create_method(f"triplet:{shapes}").method_id == "triplet.shapes-r20"
    vit = {"name": "vit_cifar", "size": "tiny", "width": 32, "depth": 1, "heads": 2, "patch": 8,
           "embedding_dim": 16}  # fmt: skip
    w = save_checkpoint(
        tmp_path / "cifar10-vit" / "triplet", build_network(vit).state_dict(), _cfg(vit)
    )
    assert create_method(f"triplet:{w}").method_id == "triplet.cifar10-vit-tiny"
    assert create_method("pixels").method_id == "pixels"  # untrained: its name


def test_two_checkpoints_of_one_method_are_two_rows(tmp_path: Path) -> None:
    a = _checkpoint(tmp_path / "1" / "run")
    torch.manual_seed(1)
    b = save_checkpoint(
        tmp_path / "2" / "run" / "triplet", build_network(ARCH).state_dict(), _cfg()
    )
    c = _checkpoint(tmp_path / "cifar10")
    out = tmp_path / "acc.json"
    accuracy.main(
        ["--methods", f"triplet:{a},triplet:{b},triplet:{c}", "--protocol", "episodes",
         "--episodes", "5", "--out", str(out)]
    )  # fmt: skip
    doc = json.loads(out.read_text())
    ids = [r["method_id"] for r in doc["results"]]
    assert len(ids) == 3 and len(set(ids)) == 3 and set(doc["methods"]) == set(ids)
    assert all(r["method"] == "triplet" for r in doc["results"])
    assert ids[2] == "triplet.cifar10-r20"
    # a and b: the same folder name and network, so one id; their weights hashes tell them apart.
    for mid, w in zip(ids[:2], (a, b), strict=True):
        described = doc["methods"][mid]
        assert mid == f"triplet.run-r20.{described['weights_sha256'][:8]}"
        assert described["checkpoint"] == str(w)
