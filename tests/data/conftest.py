"""Fixtures for the data tests: a real ingested synthetic export, and tiny NIfTI writers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from usdcm.ingest import IngestOptions, ingest
from usdcm.manifest import read_manifest
from usdcm.synth import write_export


@dataclass(frozen=True)
class Ingested:
    """An ingested export: the manifest's folder and its rows (read-only)."""

    root: Path
    rows: list[dict[str, str]]


@pytest.fixture(scope="session")
def ingested_export(tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    """A 6-patient synthetic export (seed 0), ingested once with its normal/abnormal labels."""
    base = tmp_path_factory.mktemp("data-export")
    summary = write_export(base / "pacs", patients=6, seed=0)
    out = base / "out"
    ingest(summary.root, out, IngestOptions(labels=summary.labels_path, workers=1))
    return Ingested(root=out, rows=read_manifest(out / "manifest.csv"))


NiftiWriter = Callable[[Path, np.ndarray], Path]


def _write_nifti(path: Path, volume: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


@pytest.fixture
def write_nifti() -> NiftiWriter:
    """Write a volume (``(W, H, F)`` or ``(W, H, F, 3)``, as ingest does) as gzipped NIfTI."""
    return _write_nifti
