from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from imsim.checkpoints import (
    FORMAT,
    checkpoint_paths,
    config_sha256,
    load_checkpoint,
    load_state,
    save_checkpoint,
)
from imsim.errors import UserError


def _save(tmp_path: Path, method: str = "triplet") -> Path:
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4)}
    return save_checkpoint(tmp_path / method, tensors, {"kind": "model", "method": method})


def test_round_trip_and_path_forms(tmp_path: Path) -> None:
    w = _save(tmp_path)
    assert w.name == "triplet.safetensors"
    for form in (w, w.with_suffix(".json"), tmp_path / "triplet"):
        tensors, cfg = load_checkpoint(form, method="triplet")
        assert torch.equal(tensors["a"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
        assert cfg["format"] == FORMAT and cfg["method"] == "triplet"
    assert not list(tmp_path.glob("*.tmp"))  # atomic: no temporary files left


def test_corrupted_weights_are_refused(tmp_path: Path) -> None:
    w = _save(tmp_path)
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(UserError, match="SHA-256 differs"):
        load_checkpoint(w)


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    w = _save(tmp_path)
    w.write_bytes(w.read_bytes()[:40])
    with pytest.raises(UserError, match="corrupted, truncated"):
        load_checkpoint(w)


def test_weights_of_another_run_are_refused(tmp_path: Path) -> None:
    w = _save(tmp_path / "a")
    other = save_checkpoint(
        tmp_path / "b" / "triplet", {"a": torch.zeros(2)}, {"method": "triplet"}
    )
    w.write_bytes(other.read_bytes())
    with pytest.raises(UserError, match=r"does not match triplet\.json"):
        load_checkpoint(w)


def test_wrong_method_is_refused_with_the_right_command(tmp_path: Path) -> None:
    w = _save(tmp_path, "contrastive")
    with pytest.raises(
        UserError, match=r"a .contrastive. checkpoint, not a .triplet. one; name it as contrastive:"
    ):
        load_checkpoint(w, method="triplet")


def test_missing_or_foreign_config_is_refused(tmp_path: Path) -> None:
    w = _save(tmp_path)
    cfg = w.with_suffix(".json")
    cfg.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_checkpoint(w)
    cfg.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not an imsim checkpoint config"):
        load_checkpoint(w)
    cfg.unlink()
    with pytest.raises(UserError, match=r"config .* not found"):
        load_checkpoint(w)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")


def test_a_pickle_renamed_to_safetensors_is_not_unpickled(tmp_path: Path) -> None:
    w, cfg = checkpoint_paths(tmp_path / "triplet")
    torch.save({"a": torch.zeros(2)}, w)  # a pickle-based file
    import hashlib

    sha = hashlib.sha256(w.read_bytes()).hexdigest()
    doc = {"format": FORMAT, "method": "triplet", "weights_sha256": sha}
    cfg.write_text(json.dumps({**doc, "config_sha256": config_sha256(doc)}))
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_checkpoint(w)


def test_no_pickle_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _save(tmp_path)

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    tensors, _ = load_checkpoint(w)
    assert set(tensors) == {"a", "b"}


def test_state_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    with pytest.raises(UserError, match="does not fit the architecture") as e:
        load_state(net, {"weight": torch.zeros(5, 3), "bias": torch.zeros(2)}, "x.safetensors")
    assert "\n" not in str(e.value)


def _model_config(std: list[float]) -> dict:
    return {
        "kind": "model",
        "method": "triplet",
        "preprocess": {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": std},
    }


def test_the_config_hash_covers_every_field(tmp_path: Path) -> None:
    w = save_checkpoint(tmp_path / "triplet", {"a": torch.zeros(2)}, _model_config([0.2] * 3))
    cfg = w.with_suffix(".json")
    doc = json.loads(cfg.read_text())
    assert doc["config_sha256"] == config_sha256(doc)
    cfg.write_text(json.dumps(doc))  # another layout of the same content still loads
    load_checkpoint(w, method="triplet")
    for key, value in (("epoch", 99), ("split", {"train": []}), ("weights_file", "x")):
        cfg.write_text(json.dumps({**doc, key: value}))
        with pytest.raises(UserError, match="changed after it was written"):
            load_checkpoint(w)
    del doc["config_sha256"]
    cfg.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="has no config_sha256"):
        load_checkpoint(w)


@pytest.mark.parametrize(
    ("std", "message"),
    [
        ([0.0, 0.2, 0.2], "std must be > 0"),
        ([-0.1, 0.2, 0.2], "std must be > 0"),
        ([0.2, 0.2], "3 finite numbers"),
        ([0.2, 0.2, float("nan")], "3 finite numbers"),
        ([0.2, 0.2, "x"], "3 finite numbers"),
    ],
)
def test_unusable_preprocessing_is_refused_even_with_a_valid_hash(
    tmp_path: Path, std: list, message: str
) -> None:
    w = save_checkpoint(tmp_path / "triplet", {"a": torch.zeros(2)}, _model_config(std))
    with pytest.raises(UserError, match=message) as e:
        load_checkpoint(w, method="triplet")
    assert "\n" not in str(e.value)


def test_committed_checkpoints_still_load() -> None:
    root = Path(__file__).resolve().parents[2] / "checkpoints"
    configs = [
        root / run / f"{method}.json"
        for run, methods in (
            ("shapes", ("triplet", "contrastive", "autoencoder")),
            ("cifar10", ("triplet", "contrastive", "autoencoder")),
            ("shapes-seed", ("contrastive",)),
        )
        for method in methods
    ]
    for p in configs:
        tensors, cfg = load_checkpoint(p)
        assert tensors and cfg["config_sha256"] == config_sha256(cfg)
