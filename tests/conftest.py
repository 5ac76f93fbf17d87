"""Shared fixtures: the real CIFAR-10 zip beside the checkout, when present."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.zip"


@pytest.fixture(scope="session")
def cifar10_zip() -> Path:
    """Path of the real CIFAR-10 ImageFolder zip; the test is skipped where it is absent."""
    if not SHARED_ZIP.is_file():
        pytest.skip(f"real data not present at {SHARED_ZIP}")
    return SHARED_ZIP
