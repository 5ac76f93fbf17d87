"""The engine build logic on a fake ``tensorrt`` module: network flags per version, the timing
cache (keyed, checked, replaced when rejected, never fatal), and what the builder is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.build import (
    Job,
    attach_timing_cache,
    build_engine,
    network_flags,
    save_timing_cache,
    serialized_timing_cache,
    timing_cache_path,
)
from imsim.backends.engine_manifest import Profile
from imsim.errors import UserError
from tests.engines import fake_trt
from tests.engines.fake_trt import BuilderConfig


def test_network_flags_per_version():
    assert network_flags(fake_trt.make("10.9.0.34"), strongly_typed=True) == 1 << 5
    assert network_flags(fake_trt.make("10.12.0.36"), strongly_typed=False) == 0
    # TensorRT 11 is always strongly typed: its (ignored, maybe absent) flag is never read.
    trt11 = fake_trt.make("11.4.0.106")
    assert not hasattr(trt11.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    assert network_flags(trt11, strongly_typed=True) == 0
    old = fake_trt.make("10.0.1.6")
    del old.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    with pytest.raises(UserError, match=r"no strongly typed networks; install TensorRT 10\.12\+"):
        network_flags(old, strongly_typed=True)


def test_timing_cache_file_is_keyed_by_tensorrt_and_gpu(tmp_path: Path):
    a = timing_cache_path(tmp_path, "10.12.0.36", "9.0")
    assert a == tmp_path / "timing-trt10.12.0.36-sm90.cache"
    assert timing_cache_path(tmp_path, "10.12.0.36", "8.9") != a
    assert timing_cache_path(tmp_path, "11.4.0.106", "9.0") != a


def test_timing_cache_is_loaded_replaced_or_dropped(tmp_path: Path, capsys):
    path = tmp_path / "t.cache"
    cfg = BuilderConfig()
    assert attach_timing_cache(cfg, path) == "new" and cfg.cache.blob == b""
    path.write_bytes(b"good")
    cfg = BuilderConfig()
    assert attach_timing_cache(cfg, path) == "loaded" and cfg.cache.blob == b"good"
    assert cfg.set_cache_calls == [(b"good", False)]  # never ignore a device mismatch
    assert capsys.readouterr().err == ""

    # From another GPU: set_timing_cache says False; an empty cache replaces it.
    cfg = BuilderConfig(reject={b"good"})
    assert attach_timing_cache(cfg, path) == "replaced" and cfg.cache.blob == b""
    err = capsys.readouterr().err
    assert "rejected the timing cache" in err and err.count("\n") == 1
    # Unreadable (another TensorRT version): create_timing_cache gives None.
    cfg = BuilderConfig(unreadable={b"good"})
    assert attach_timing_cache(cfg, path) == "replaced" and cfg.cache.blob == b""
    # Not even an empty cache: the build goes on without one.
    cfg = BuilderConfig(reject={b"good", b""})
    assert attach_timing_cache(cfg, path) == "none" and cfg.cache is None
    assert "building without one" in capsys.readouterr().err


def test_a_missing_timing_cache_after_the_build_is_a_warning(tmp_path: Path, capsys):
    cfg = BuilderConfig(no_cache=True)
    attach_timing_cache(cfg, tmp_path / "t.cache")
    assert serialized_timing_cache(cfg) is None  # get_timing_cache() gave None: no exception
    assert "no timing cache" in capsys.readouterr().err
    assert not save_timing_cache(tmp_path / "t.cache", None)
    assert not (tmp_path / "t.cache").exists()
    # A cache that cannot be written (its path is a folder) is not a failed build either.
    (tmp_path / "dir.cache").mkdir()
    assert not save_timing_cache(tmp_path / "dir.cache", b"x")
    assert "could not save the timing cache" in capsys.readouterr().err
    assert save_timing_cache(tmp_path / "ok.cache", b"x")
    assert (tmp_path / "ok.cache").read_bytes() == b"x"


def _job(tmp_path: Path, strongly_typed: bool, fp16_flag: bool, precision: str = "fp16") -> Job:
    src = tmp_path / ("m.fp16.onnx" if strongly_typed else "m.onnx")
    return Job("m", precision, src, tmp_path / f"m.{precision}.engine", strongly_typed, fp16_flag)


@pytest.mark.parametrize(
    ("version", "strongly_typed", "fp16_flag", "flags"),
    [
        ("10.9.0.34", False, True, 0),  # weakly typed, BuilderFlag.FP16
        ("10.12.0.36", True, False, 1 << 5),  # strongly typed FP16 ONNX
        ("11.4.0.106", True, False, 0),  # always strongly typed; no flags exist
    ],
)
def test_build_engine_tells_the_builder_what_the_mode_says(
    tmp_path: Path, version, strongly_typed, fp16_flag, flags
):
    trt = fake_trt.make(version)
    job = _job(tmp_path, strongly_typed, fp16_flag)
    built = build_engine(
        trt, job, Profile(1, 4, 8), "images", (32, 32, 3), 2**30, tmp_path / "t.cache"
    )
    cfg = trt.log["config"]
    assert trt.log["network_flags"] == [flags]
    assert cfg.flags == ([trt.BuilderFlag.FP16] if fp16_flag else [])
    assert cfg.pools == {trt.MemoryPoolType.WORKSPACE: 2**30}
    assert cfg.profiles[0].shapes["images"] == ((1, 32, 32, 3), (4, 32, 32, 3), (8, 32, 32, 3))
    assert (built.engine, built.timing_cache, built.cache_state) == (
        fake_trt.ENGINE,
        b"+timings",  # the (empty) cache TensorRT filled while building
        "new",
    )


@pytest.mark.parametrize(("version", "flags"), [("10.9.0.34", 1 << 5), ("11.4.0.106", 0)])
def test_int8_engine_is_strongly_typed_without_precision_flags(tmp_path: Path, version, flags):
    trt = fake_trt.make(version)
    job = Job("m", "int8", tmp_path / "m.int8.onnx", tmp_path / "m.int8.engine", True, False)
    build_engine(trt, job, Profile(1, 4, 8), "images", (32, 32, 3), 2**30, tmp_path / "t.cache")
    cfg = trt.log["config"]
    assert trt.log["network_flags"] == [flags]  # STRONGLY_TYPED on 10; always on in 11
    assert trt.log["parsed"] == str(tmp_path / "m.int8.onnx")
    assert cfg.flags == []  # explicit quantization: no INT8 (or FP16) builder flag
    assert cfg.cleared == [trt.BuilderFlag.TF32]  # float parts stay FP32, as ORT verified them


def test_build_engine_survives_a_missing_timing_cache(tmp_path: Path):
    trt = fake_trt.make("10.12.0.36", no_cache=True)
    built = build_engine(
        trt,
        _job(tmp_path, True, False),
        Profile(1, 1, 1),
        "images",
        (8, 8, 3),
        1,
        tmp_path / "t.cache",
    )
    assert built.engine == fake_trt.ENGINE and built.timing_cache is None
