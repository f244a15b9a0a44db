"""Fixtures for the data tests: a real ingested synthetic export, and tiny NIfTI writers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

NiftiWriter = Callable[[Path, np.ndarray], Path]


def _write_nifti(path: Path, volume: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


@pytest.fixture
def write_nifti() -> NiftiWriter:
    """Write a volume (``(W, H, F)`` or ``(W, H, F, 3)``, as ingest does) as gzipped NIfTI."""
    return _write_nifti
