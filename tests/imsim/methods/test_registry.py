"""The registry: declared method options, strict creation, rejected flags, one network runner."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import accuracy
from imsim.errors import UserError
from imsim.methods import (
    check_method_flags,
    create_method,
    distinct_ids,
    list_methods,
    method_from_args,
    register,
)
from imsim.methods.base import Embedder, NetworkEmbedder

ROOT = Path(__file__).resolve().parents[3]


def test_every_method_declares_its_options() -> None:
    options = {n: set(e.options) for n, e in list_methods().items()}
    assert options["pixels"] == {"device", "batch_size"}
    assert options["color-hist"] == set()
    assert options["classical"] == {"recipe"}
    assert options["triplet"] == {"device", "batch_size"}
    assert options["clip"] == {"clip_model", "pretrained", "device", "batch_size", "recipe"}


def test_an_option_the_method_does_not_take_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="'pixels' takes device, batch_size; not clip_model"):
        create_method("pixels", clip_model="ViT-B-32")
    with pytest.raises(TypeError, match="'color-hist' takes no options; not device"):
        create_method("color-hist", device="cpu")
    assert create_method("pixels", device="cpu", batch_size=7).batch_size == 7


def test_a_factory_must_declare_its_options() -> None:
    with pytest.raises(TypeError, match="declare its options as keyword arguments"):
        register("swallows-everything")(lambda **_: None)
    assert "swallows-everything" not in list_methods()


def test_a_flag_no_requested_method_takes_is_rejected(tmp_path: Path) -> None:
    out = str(tmp_path / "x.json")
    with pytest.raises(UserError, match=r"--clip-model does not apply to pixels, color-hist "
                       r"\(it is an option of clip, clip-text\)"):  # fmt: skip
        accuracy.main(["--methods", "pixels,color-hist", "--clip-model", "ViT-L-14", "--out", out])
    with pytest.raises(UserError, match="--recipe does not apply to pixels"):
        accuracy.main(["--methods", "pixels", "--recipe", "seed", "--out", out])
    args = accuracy.build_parser().parse_args(["--methods", "color-hist", "--device", "cuda:1"])
    with pytest.raises(UserError, match="--device does not apply to color-hist"):
        check_method_flags(["color-hist"], args)


def test_a_flag_one_requested_method_takes_is_passed_to_it_only() -> None:
    args = accuracy.build_parser().parse_args(["--methods", "pixels,ssim", "--recipe", "seed"])
    items = ["pixels", "ssim"]
    assert method_from_args("ssim", args, items=items).recipe.name == "seed"
    assert method_from_args("pixels", args, items=items).spec.name == "pixels"
    with pytest.raises(UserError, match="--recipe does not apply to pixels"):
        method_from_args("pixels", args)  # alone, nothing takes it


def test_colliding_ids_are_told_apart_by_weights_then_number() -> None:
    ids = distinct_ids(
        ["t.a-r20", "t.a-r20", "pixels", "t.b-r20"], ["aa" * 32, "bb" * 32, None, "c"]
    )
    assert ids == ["t.a-r20.aaaaaaaa", "t.a-r20.bbbbbbbb", "pixels", "t.b-r20"]
    assert distinct_ids(["t.x", "t.x"], ["ab" * 32, "ab" * 32]) == [
        "t.x.abababab-1",
        "t.x.abababab-2",
    ]


def test_text_encoder_is_a_declared_capability() -> None:
    assert Embedder.text_encoder is False
    assert create_method("pixels").text_encoder is False
    from imsim.methods.clip import ClipEmbedder

    assert ClipEmbedder.text_encoder is True


def test_network_methods_embed_through_their_runner() -> None:
    m = create_method("pixels")
    assert isinstance(m, NetworkEmbedder)
    assert m.runner.describe()["backend"] == "torch" and m.runner.precision == "fp32"


# Where images are embedded outside the backends: none of these may run a network on images
# itself (``torch.from_numpy`` of the images, then the module): a network method's ``embed``,
# parity, export checks, training validation and search all go through a runner (a Backend).
EMBEDDING_SITES = (
    "imsim/methods/*.py",
    "imsim/clip/*.py",
    "bench/accuracy.py",
    "bench/parity.py",
    "export/graph.py",
    "export/gate.py",
    "train/validation.py",
    "search/*.py",
)


def test_no_module_outside_the_backends_runs_a_network_on_images() -> None:
    files = sorted(f for pattern in EMBEDDING_SITES for f in ROOT.glob(pattern))
    assert len(files) > 15
    offenders = [
        f"{f.relative_to(ROOT)}:{i}"
        for f in files
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if re.search(r"torch\.(from_numpy|as_tensor)\(", line)
    ]
    assert offenders == []
