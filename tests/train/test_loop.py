from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from imsim.checkpoints import load_checkpoint
from imsim.errors import UserError
from train.__main__ import main as train_main
from train.loop import RunConfig, Trainer, state_paths
from train.recipes import make_recipe


def _cfg(out: Path, **kw: object) -> RunConfig:
    # The autoencoder: the smallest network, so the test takes seconds.
    recipe = make_recipe("autoencoder", batch_size=32, samples_per_epoch=64)
    base = RunConfig(method="autoencoder", recipe=recipe, epochs=3, out=out, data_spec="tiny")
    return replace(base, **kw)


class Interrupted(Exception):
    pass


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tiny, tmp_path: Path) -> None:
    full = Trainer(_cfg(tmp_path / "full"), tiny).run()

    def crash(epoch: int) -> None:
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        Trainer(_cfg(tmp_path / "cut"), tiny).run(on_epoch_end=crash)
    assert all(p.exists() for p in state_paths(tmp_path / "cut", "autoencoder"))
    resumed = Trainer(_cfg(tmp_path / "cut", resume=True), tiny).run()

    def strip(history: list[dict]) -> list[dict]:
        drop = ("images_per_second", "train_seconds")
        return [{k: v for k, v in h.items() if k not in drop} for h in history]

    assert strip(resumed["history"]) == strip(full["history"])  # same losses and scores
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3]
    _, cfg_a = load_checkpoint(tmp_path / "full" / "autoencoder.safetensors", method="autoencoder")
    _, cfg_b = load_checkpoint(tmp_path / "cut" / "autoencoder.safetensors", method="autoencoder")
    assert cfg_a["weights_sha256"] == cfg_b["weights_sha256"]  # bit-identical weights
    assert cfg_a["epoch"] == full["best"]["epoch"]
    assert not any(p.exists() for p in state_paths(tmp_path / "cut", "autoencoder"))
    metrics = json.loads((tmp_path / "cut" / "autoencoder.metrics.json").read_text())
    assert metrics["completed"] and metrics["selected"]["epoch"] == cfg_a["epoch"]


def test_resume_with_other_arguments_is_refused(tiny, tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        Trainer(_cfg(tmp_path, epochs=2), tiny).run(on_epoch_end=lambda e: _raise())
    with pytest.raises(UserError, match="different epochs, seed"):
        Trainer(_cfg(tmp_path, epochs=4, seed=1, resume=True), tiny).run()


def _raise() -> None:
    raise Interrupted


def _write_imagefolder(ds, root: Path) -> None:
    for split_name, split in (("train", ds.train), ("test", ds.test)):
        for i, (img, label) in enumerate(zip(split.images, split.labels, strict=True)):
            d = root / split_name / ds.class_names[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:04d}.png")


def test_command_line_trains_and_bench_evaluates(tiny, tmp_path: Path, capsys) -> None:
    _write_imagefolder(tiny, tmp_path / "data")
    out = tmp_path / "ckpt"
    args = ["--method", "contrastive", "--data", f"imagefolder:{tmp_path / 'data'}",
            "--epochs", "1", "--out", str(out), "--depth", "20", "--batch-size", "32",
            "--samples-per-epoch", "64"]  # fmt: skip
    assert train_main(args) == 0
    assert {p.name for p in out.iterdir()} == {
        "contrastive.safetensors",
        "contrastive.json",
        "contrastive.metrics.json",
    }
    cfg = json.loads((out / "contrastive.json").read_text())
    assert cfg["method"] == "contrastive" and cfg["epoch"] == 1
    assert set(cfg["split"]["validation"]).isdisjoint(cfg["split"]["train"])
    assert set(cfg["split"]["unseen"]).isdisjoint(
        cfg["split"]["train"] + cfg["split"]["validation"]
    )

    from train.report import main as report_main

    report_main([str(out)])
    shown = capsys.readouterr().out
    assert "| 1 (selected) |" in shown and "Selecting on the unseen classes" in shown

    from bench import accuracy

    acc = tmp_path / "acc.json"
    method = f"contrastive:{out / 'contrastive.safetensors'}"
    accuracy.main(["--data", f"imagefolder:{tmp_path / 'data'}", "--methods", method,
                   "--protocol", "episodes", "--episodes", "10", "--shots", "2", "--queries", "3",
                   "--out", str(acc)])  # fmt: skip
    rows = json.loads(acc.read_text())["results"]
    assert rows[0]["method"] == "contrastive" and 0 <= rows[0]["value"] <= 1


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no CUDA device"):
        train_main(["--method", "autoencoder", "--epochs", "1", "--device", "cuda:0"])
    with pytest.raises(SystemExit):
        train_main(["--method", "siamese", "--epochs", "1"])


@pytest.mark.parametrize("method", ["autoencoder", "triplet"])
def test_seed_recipe_trains(tiny, tmp_path: Path, method: str) -> None:
    recipe = make_recipe(method, "seed", depth=20, batch_size=16, samples_per_epoch=32)
    assert recipe.sampling == ("triplets" if method == "triplet" else "pairs")
    cfg = RunConfig(method=method, recipe=recipe, epochs=1, out=tmp_path, data_spec="tiny")
    result = Trainer(cfg, tiny).run()
    assert result["history"][-1]["loss"] > 0
    _, saved = load_checkpoint(tmp_path / f"{method}.safetensors", method=method)
    assert saved["recipe"]["name"] == "seed" and saved["recipe"]["augment"] == "frozen-flip"


def test_vit_backbone_trains_and_loads_as_a_method(tiny, tmp_path: Path) -> None:
    from imsim.methods import create_method

    recipe = make_recipe("triplet", arch="vit-tiny", batch_size=16, samples_per_epoch=32)
    assert recipe.arch["name"] == "vit_cifar" and recipe.lr == 1e-3
    cfg = RunConfig(method="triplet", recipe=recipe, epochs=1, out=tmp_path, data_spec="tiny")
    assert Trainer(cfg, tiny).run()["history"][-1]["loss"] > 0
    method = create_method(f"triplet:{tmp_path / 'triplet.safetensors'}")
    assert method.describe()["arch"]["name"] == "vit_cifar"
    emb = method.embed(tiny.test.images[:5])
    assert emb.shape == (5, 64) and abs(float((emb**2).sum(1).mean()) - 1.0) < 1e-5


def test_vit_flags_that_do_not_apply_are_refused(tmp_path: Path) -> None:
    base = ["--epochs", "1", "--out", str(tmp_path / "x"), "--arch", "vit-tiny"]
    with pytest.raises(UserError, match="triplet and contrastive methods with the default recipe"):
        train_main(["--method", "autoencoder", *base])
    with pytest.raises(UserError, match="seed recipe is the study's ResNet"):
        train_main(["--method", "triplet", "--recipe", "seed", *base])
    with pytest.raises(UserError, match="--depth sets the ResNet's depth"):
        train_main(["--method", "triplet", "--depth", "20", *base])
    assert not (tmp_path / "x").exists()
