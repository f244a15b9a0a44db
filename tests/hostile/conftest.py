"""Fixtures for hostile-input tests: the valid files the fuzzer mutates."""

from __future__ import annotations

import pytest

from tests.hostile.fuzzer import load_seeds


@pytest.fixture(scope="session")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Synthetic ultrasound files of every transfer syntax plus pydicom's examples."""
    return load_seeds(tmp_path_factory.mktemp("seeds"))
