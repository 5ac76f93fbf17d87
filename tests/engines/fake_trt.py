"""A stand-in for the ``tensorrt`` module: just the builder API ``engines.build`` calls, with
every call recorded, so the build logic runs on a machine without TensorRT or a GPU.

``make(version)`` returns a fresh module: TensorRT 10 has ``STRONGLY_TYPED`` and
``BuilderFlag.FP16``; TensorRT 11 has neither here (11 documents the flag as ignored and may drop
it, and has no FP16 builder flag). The builder config's timing cache can be told to refuse a blob
(``reject``), fail to read one (``unreadable``) or give none back after the build (``no_cache``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

ENGINE = b"serialized engine"
# The "current CUDA device", as set by ``device`` (patched in for ``torch.cuda.device``).
current_device: list[Any] = [None]


@contextlib.contextmanager
def device(dev: Any) -> Iterator[None]:
    """Stands in for ``torch.cuda.device`` on a machine without CUDA."""
    before = current_device[0]
    current_device[0] = dev
    try:
        yield
    finally:
        current_device[0] = before


class TimingCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> memoryview:
        return memoryview(self.blob + b"+timings")


class BuilderConfig:
    def __init__(
        self,
        reject: set[bytes] | None = None,
        unreadable: set[bytes] | None = None,
        no_cache: bool = False,
    ) -> None:
        self.reject = reject or set()
        self.unreadable = unreadable or set()
        self.no_cache = no_cache
        self.cache: TimingCache | None = None
        self.flags: list[Any] = []
        self.cleared: list[Any] = []
        self.pools: dict[Any, int] = {}
        self.profiles: list[Any] = []
        self.set_cache_calls: list[tuple[bytes, bool]] = []

    def create_timing_cache(self, blob: bytes) -> TimingCache | None:
        blob = bytes(blob)
        return None if blob in self.unreadable else TimingCache(blob)

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        self.set_cache_calls.append((cache.blob, ignore_mismatch))
        if cache.blob in self.reject:
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> TimingCache | None:
        return None if self.no_cache else self.cache

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.pools[pool] = size

    def set_flag(self, flag: Any) -> None:
        self.flags.append(flag)

    def clear_flag(self, flag: Any) -> None:
        self.cleared.append(flag)

    def add_optimization_profile(self, profile: Any) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
        self.shapes[name] = (lo, opt, hi)


def make(version: str = "10.12.0.36", **config: Any) -> SimpleNamespace:
    """A fake ``tensorrt`` module of ``version``; ``config`` goes to its builder config."""
    major = int(version.split(".")[0])
    log: dict[str, Any] = {"network_flags": [], "built_on": [], "config": None}

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    class Network:
        pass

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: Logger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            log["parsed"] = path
            return True

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            log["network_flags"].append(flags)
            return Network()

        def create_builder_config(self) -> BuilderConfig:
            log["config"] = BuilderConfig(**config)
            return log["config"]

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, cfg: BuilderConfig) -> memoryview:
            log["built_on"].append(current_device[0])  # the device TensorRT would build for
            return memoryview(ENGINE)

    flags = SimpleNamespace(STRONGLY_TYPED=5) if major < 11 else SimpleNamespace()
    builder_flags = SimpleNamespace(TF32=7, **({"FP16": 0} if major < 11 else {}))
    return SimpleNamespace(
        __version__=version,
        Logger=Logger,
        Builder=Builder,
        OnnxParser=OnnxParser,
        NetworkDefinitionCreationFlag=flags,
        BuilderFlag=builder_flags,
        MemoryPoolType=SimpleNamespace(WORKSPACE=0),
        log=log,
    )
