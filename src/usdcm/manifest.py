"""The manifest: one CSV row per SOP instance, the contract between ingest and training.

Owns the column list, reading and atomic writing of ``manifest.csv`` and ``excluded.csv``.
Never decodes DICOM. The schema is documented in ``manifests/README.md``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from usdcm.atomic import atomic_open
from usdcm.errors import ManifestError

MANIFEST_COLUMNS: tuple[str, ...] = (
    # identity
    "image_id",
    "image_path",
    "patient_key",
    "study_key",
    "series_key",
    "study_uid",
    "series_uid",
    "sop_uid",
    "label",
    # geometry
    "frames",
    "height",
    "width",
    "channels",
    "spacing_x_mm",
    "spacing_y_mm",
    "crop",
    # source
    "manufacturer",
    "model",
    "modality",
    "sop_class",
    "photometric",
    "transfer_syntax",
    "frame_time_ms",
    "source_path",
    "source_size",
)
"""Columns of ``manifest.csv``, in order. Later columns may be added; none are removed."""

REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "image_path", "patient_key", "label")

EXCLUDED_COLUMNS: tuple[str, ...] = ("path", "code", "reason")
"""Columns of ``excluded.csv``: the source path, a reason code and the reason in words."""


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> int:
    """Write ``rows`` as UTF-8 CSV with ``columns`` atomically; return the number of rows.

    Values of ``None`` are written as empty cells; unknown keys are an error.
    """
    count = 0
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
            count += 1
    return count


def write_manifest(path: Path, rows: Iterable[Mapping[str, object]]) -> int:
    """Write ``manifest.csv`` atomically (temp file, then rename)."""
    return write_csv(path, MANIFEST_COLUMNS, rows)


def write_excluded(path: Path, rows: Iterable[Mapping[str, object]]) -> int:
    """Write ``excluded.csv`` atomically."""
    return write_csv(path, EXCLUDED_COLUMNS, rows)


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Read a manifest, checking that it exists and has the required columns.

    Raises ``ManifestError`` naming the missing columns, or the problem with the file.
    """
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [column for column in REQUIRED_COLUMNS if column not in columns]
            if missing:
                message = (
                    f"The manifest {path} lacks the columns {', '.join(missing)}; "
                    "write it with `usdcm ingest` or add them (see manifests/README.md)."
                )
                raise ManifestError(message)
            return [dict(row) for row in reader]
    except FileNotFoundError as err:
        message = f"No manifest at {path}; run `usdcm ingest SOURCE --out DIR` first."
        raise ManifestError(message) from err
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        message = f"The manifest {path} is unreadable ({type(err).__name__}); it must be UTF-8 CSV."
        raise ManifestError(message) from err
