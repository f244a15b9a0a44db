"""The manifest: one CSV row per SOP instance, the contract between ingest and training.

Owns :class:`ManifestRow`, the column list, reading and atomic writing of ``manifest.csv``
and ``excluded.csv``, and the manifest's schema version (a ``schema_version`` column, the
same value on every row). Never decodes DICOM. The schema is documented in
``manifests/README.md``. A manifest without a version is accepted: users write manifests
by hand, with only the required columns.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from usdcm.artifacts._csv import write_csv
from usdcm.artifacts._schema import SCHEMA_KEY, check_schema_version
from usdcm.errors import ManifestError

SCHEMA_VERSION = 3
"""The version of ``manifest.csv`` this usdcm writes. Version 2 adds ``sex``, ``age_band``
and ``study_year``; version 3 adds ``region_note``."""

READ_VERSIONS: tuple[int, ...] = (1, 2, SCHEMA_VERSION)
"""The versions read: an older manifest lacks the later columns, which read as unknown
(``row.get(column, "")``)."""

DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("sex", "age_band", "study_year")
"""The patient and study columns: bands and years only, never a date."""

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
    "region_note",
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
    # patient and study: a sex code, a 10-year age band, a year; never a date
    *DEMOGRAPHIC_COLUMNS,
    # artifact
    SCHEMA_KEY,
)
"""Columns of ``manifest.csv``, in order. Later columns may be added; none are removed."""

REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "image_path", "patient_key", "label")

EXCLUDED_COLUMNS: tuple[str, ...] = ("path", "code", "reason")
"""Columns of ``excluded.csv``: the source path, a reason code and the reason in words."""


@dataclass(frozen=True)
class ManifestRow:
    """One row of ``manifest.csv``: one converted SOP instance (see ``manifests/README.md``).

    Values are as they are written: ``None`` is an empty cell. Checked when built: the
    required identity is there, and the geometry is that of an image. ``crop`` is empty
    when the image had no 2D tissue region and keeps its whole frame. ``region_note`` names
    what was tolerated in that region (``clipped_1px``, ``negative_delta_x``, ...; see
    :data:`usdcm.dicom.regions.REGION_NOTES`), ``;``-joined, or is empty.
    """

    image_id: str
    image_path: str
    patient_key: str
    study_key: str
    series_key: str
    study_uid: str
    series_uid: str
    sop_uid: str
    label: str
    frames: int
    height: int
    width: int
    channels: int
    spacing_x_mm: float | None
    spacing_y_mm: float | None
    crop: str
    manufacturer: str
    model: str
    modality: str
    sop_class: str
    photometric: str
    transfer_syntax: str
    frame_time_ms: float | None
    source_path: str
    source_size: int
    sex: str = ""
    age_band: str = ""
    study_year: str = ""
    region_note: str = ""

    def __post_init__(self) -> None:
        missing = [name for name in REQUIRED_COLUMNS if name != "label" and not getattr(self, name)]
        if missing:
            message = f"a manifest row needs {', '.join(missing)}; found them empty"
            raise ManifestError(message)
        geometry = (self.frames, self.height, self.width, self.channels)
        if min(geometry) < 1:
            message = f"a manifest row's frames, height, width and channels are >= 1: {geometry}"
            raise ManifestError(message)

    def to_csv_row(self) -> dict[str, object]:
        """The row as :func:`write_manifest` writes it, with the schema version."""
        # every field is a plain value: no deep copy (``asdict``), which cost more than
        # writing the row
        row: dict[str, object] = {field.name: getattr(self, field.name) for field in _FIELDS}
        row[SCHEMA_KEY] = SCHEMA_VERSION
        return row


_FIELDS = fields(ManifestRow)


def write_manifest(path: Path, rows: Iterable[ManifestRow | Mapping[str, object]]) -> int:
    """Write ``manifest.csv`` atomically (temp file, then rename); return the row count.

    Rows are :class:`ManifestRow` (ingest) or mappings of the columns (a manifest made by
    other means); a mapping without ``schema_version`` gets this usdcm's.
    """
    return write_csv(path, MANIFEST_COLUMNS, (_manifest_row(row) for row in rows))


def _manifest_row(row: ManifestRow | Mapping[str, object]) -> Mapping[str, object]:
    if isinstance(row, ManifestRow):
        return row.to_csv_row()
    return row if SCHEMA_KEY in row else {**row, SCHEMA_KEY: SCHEMA_VERSION}


def write_excluded(path: Path, rows: Iterable[Mapping[str, object]]) -> int:
    """Write ``excluded.csv`` atomically."""
    return write_csv(path, EXCLUDED_COLUMNS, rows)


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Read a manifest, checking that it exists, has the required columns and, when it
    carries a ``schema_version``, that this usdcm reads it (:data:`READ_VERSIONS`).

    Raises ``ManifestError`` naming the missing columns, or the problem with the file, and
    ``SchemaVersionError`` for a manifest of another schema version.
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
            rows = [dict(row) for row in reader]
            for version in {row.get(SCHEMA_KEY) for row in rows}:
                if str(version) in {str(older) for older in READ_VERSIONS}:
                    continue
                check_schema_version(
                    version,
                    SCHEMA_VERSION,
                    artifact="manifest",
                    source=path,
                    fix=(
                        "run `usdcm ingest` again with this usdcm to rewrite it (finished "
                        f"work is reused), or empty the {SCHEMA_KEY} column of a manifest "
                        "you wrote yourself"
                    ),
                    missing_ok=True,
                )
            return rows
    except FileNotFoundError as err:
        message = f"No manifest at {path}; run `usdcm ingest SOURCE --out DIR` first."
        raise ManifestError(message) from err
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        message = f"The manifest {path} is unreadable ({type(err).__name__}); it must be UTF-8 CSV."
        raise ManifestError(message) from err
