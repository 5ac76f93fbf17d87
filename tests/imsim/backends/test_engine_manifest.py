import importlib.util
import json

import pytest

from imsim.artifacts import sha256_file
from imsim.backends.engine_manifest import (
    Profile,
    check_manifest,
    engine_path,
    load_manifest,
    make_manifest,
    manifest_path,
    rebuild_command,
)
from imsim.backends.tensorrt_backend import NO_TENSORRT, require_tensorrt
from imsim.errors import UserError
from imsim.results import write_json_atomic

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
ENV = {"tensorrt_version": "10.9.0.34", "gpu_name": "NVIDIA H100", "compute_capability": "9.0"}


@pytest.fixture
def built(tmp_path):
    """An engine file (opaque bytes) with its manifest and source ONNX, as engines.build writes."""
    onnx_dir, engine_dir = tmp_path / "onnx", tmp_path / "engines"
    onnx_dir.mkdir()
    src = onnx_dir / "m.onnx"
    src.write_bytes(b"onnx graph bytes")
    engine = engine_path(engine_dir, "m", "fp16")
    engine.parent.mkdir()
    engine.write_bytes(b"serialized engine")
    manifest = make_manifest(
        method="m",
        precision="fp16",
        engine_sha256=sha256_file(engine),
        onnx_file=src,
        onnx_sha256=sha256_file(src),
        tensorrt_version=ENV["tensorrt_version"],
        gpu_name=ENV["gpu_name"],
        compute_capability=ENV["compute_capability"],
        profile=Profile(1, 64, 256),
        input_name="images",
        input_shape=(32, 32, 3),
        output_name="embeddings",
        embedding_size=192,
        build={"strongly_typed": False, "builder_flags": ["FP16"]},
    )
    write_json_atomic(manifest_path(engine), manifest)
    return engine, onnx_dir


def _check(engine, onnx_dir, **env):
    check_manifest(
        load_manifest(engine, onnx_dir), engine=engine, onnx_dir=onnx_dir, **{**ENV, **env}
    )


def test_paths_and_manifest_fields(built):
    engine, onnx_dir = built
    assert engine.name == "m.fp16.engine" and manifest_path(engine).name == "m.fp16.engine.json"
    doc = load_manifest(engine, onnx_dir)
    assert doc["profile"] == {"min": 1, "opt": 64, "max": 256}
    assert doc["gpu"] == {"name": "NVIDIA H100", "compute_capability": "9.0"}
    assert doc["onnx"]["file"] == "m.onnx" and doc["input"]["shape"] == ["batch", 32, 32, 3]
    _check(engine, onnx_dir)  # the matching environment passes


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"tensorrt_version": "11.0.0.1"}, "built with TensorRT 10.9.0.34, this is TensorRT 11"),
        ({"compute_capability": "8.9"}, r"built for NVIDIA H100 \(compute capability 9.0\)"),
        ({"gpu_name": "NVIDIA H200"}, "this GPU is NVIDIA H200"),
    ],
)
def test_other_tensorrt_or_gpu_is_refused_with_rebuild(built, env, message):
    engine, onnx_dir = built
    with pytest.raises(UserError, match=message) as e:
        _check(engine, onnx_dir, **env)
    assert "rebuild it: python -m engines.build --methods m --precision fp16" in str(e.value)


def test_changed_or_missing_onnx_and_swapped_engine_are_refused(built):
    engine, onnx_dir = built
    (onnx_dir / "m.onnx").write_bytes(b"re-exported graph")
    with pytest.raises(UserError, match=r"m.onnx changed since .* was built from it; rebuild"):
        _check(engine, onnx_dir)
    (onnx_dir / "m.onnx").unlink()
    with pytest.raises(UserError, match="which is missing"):
        _check(engine, onnx_dir)
    engine.write_bytes(b"another engine")
    with pytest.raises(UserError, match="not the engine its manifest describes"):
        _check(engine, onnx_dir)


def test_missing_or_broken_manifests_are_refused(built, tmp_path):
    engine, onnx_dir = built
    with pytest.raises(UserError, match=r"engine .*nope.fp16.engine not found; build it"):
        load_manifest(engine.with_name("nope.fp16.engine"), onnx_dir)
    manifest_path(engine).write_text("[1, 2]")
    with pytest.raises(UserError, match="not a JSON object"):
        load_manifest(engine, onnx_dir)
    manifest_path(engine).write_text(json.dumps({"schema": "imsim.engine/1", "method": "m"}))
    with pytest.raises(UserError, match="not a valid engine manifest"):
        load_manifest(engine, onnx_dir)
    manifest_path(engine).unlink()
    with pytest.raises(UserError, match=r"engine manifest .* not found"):
        load_manifest(engine, onnx_dir)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, 300, 256), "min <= opt <= max"),
        ((0, 1, 2), "min batch must be an integer >= 1"),
        ((1, 2.5, 4), "opt batch must be an integer"),
    ],
)
def test_bad_profiles_are_refused(args, message):
    with pytest.raises(UserError, match=message):
        Profile(*args)
    assert Profile(1, 1, 1).to_dict() == {"min": 1, "opt": 1, "max": 1}


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_no_tensorrt_is_one_clear_error():
    with pytest.raises(UserError) as e:
        require_tensorrt()
    assert str(e.value) == NO_TENSORRT and "\n" not in NO_TENSORRT


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(gpu="NVIDIA H100"), r"gpu must be an object, not \"NVIDIA H100\""),
        (lambda d: d["profile"].update(max="256"), r"profile.max must be an integer, not \"256\""),
        (lambda d: d.update(embedding_size=True), "embedding_size must be an integer, not true"),
        (lambda d: d["onnx"].update(file=3), "onnx.file must be a string, not 3"),
        (lambda d: d["onnx"].pop("sha256"), "onnx.sha256 is missing"),
        (lambda d: d.update(tensorrt_version=10.9), "tensorrt_version must be a string"),
        (lambda d: d.update(precision="int4"), "precision must be one of fp16, fp32, int8"),
        (lambda d: d["profile"].update(min=300), "profile: optimization profile needs min <= opt"),
        (lambda d: d["input"].update(shape="batch,32,32,3"), "input.shape must be a list"),
    ],
)
def test_hand_edited_manifest_with_a_wrong_type_is_one_line(built, edit, message):
    """A field of the wrong type fails when the manifest is loaded, with one line naming the
    field, instead of an AttributeError or TypeError later in the checks."""
    engine, onnx_dir = built
    doc = json.loads(manifest_path(engine).read_text())
    edit(doc)
    manifest_path(engine).write_text(json.dumps(doc))
    with pytest.raises(UserError, match=message) as e:
        load_manifest(engine, onnx_dir)
    text = str(e.value)
    assert "\n" not in text and "not a valid engine manifest" in text
    assert text.endswith(f"rebuild it: {rebuild_command('m', 'fp16', engine, onnx_dir)}")
