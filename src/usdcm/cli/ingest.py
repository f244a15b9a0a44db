"""``usdcm ingest``: placeholder, filled in next."""

from __future__ import annotations


def ingest_command() -> None:
    """Ingest a DICOM export."""
