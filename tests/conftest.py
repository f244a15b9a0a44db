"""Fixtures shared across the test tree.

``synth_mix`` is a small synthetic export that holds every storage recipe at least once; it
is written once per session and must be treated as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from usdcm.artifacts.manifest import read_manifest
from usdcm.ingest import IngestOptions, ingest
from usdcm.synth import ExportSummary, write_export


@pytest.fixture(scope="session")
def synth_mix(tmp_path_factory: pytest.TempPathFactory) -> ExportSummary:
    """A 5-patient synthetic export (seed 0) covering every recipe, junk kind and region kind."""
    return write_export(tmp_path_factory.mktemp("synth-mix") / "export", patients=5, seed=0)


@dataclass(frozen=True)
class Ingested:
    """An ingested export: the manifest's folder and its rows (read-only)."""

    root: Path
    rows: list[dict[str, str]]
    export: ExportSummary


@pytest.fixture(scope="session")
def ingested_export(tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    """A 6-patient synthetic export (seed 0), ingested once with its normal/abnormal labels."""
    base = tmp_path_factory.mktemp("data-export")
    summary = write_export(base / "pacs", patients=6, seed=0)
    out = base / "out"
    ingest(summary.root, out, IngestOptions(labels=summary.labels_path, workers=1))
    return Ingested(root=out, rows=read_manifest(out / "manifest.csv"), export=summary)
