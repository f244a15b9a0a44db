"""``splits.csv``: which image of a run went to train, val or test.

Owns the file's columns, its schema version, and reading and writing it (atomically).
Written by ``train``, read by ``evaluate`` (to pick the evaluated images and to re-check
leakage). Holds keyed pseudonyms only (``patient_key``, ``study_key``), never a DICOM UID.
Never decides a split: :mod:`usdcm.data.splits` does.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from usdcm.artifacts._csv import write_csv
from usdcm.artifacts._schema import SCHEMA_KEY, check_schema_version
from usdcm.errors import SplitsFileError

SCHEMA_VERSION = 2
"""Version 2 has ``study_key`` and ``schema_version``; version 1 (no column) had a UID."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The split names, in the order they are used."""

SPLIT_COLUMNS: tuple[str, ...] = (
    "image_id",
    "patient_key",
    "study_key",
    "label",
    "split",
    SCHEMA_KEY,
)
"""Columns of ``splits.csv``: keyed pseudonyms only, never a DICOM UID."""

_FIX = "retrain the run with this usdcm (`usdcm train`), which writes splits.csv anew"


@dataclass(frozen=True)
class SplitRow:
    """One image of a run and the split it went to.

    >>> SplitRow("img1", "pk1", "sk1", "abnormal", "test").split
    'test'
    >>> SplitRow("img1", "pk1", "", "abnormal", "holdout")
    Traceback (most recent call last):
    ...
    usdcm.errors.SplitsFileError: image img1 has split 'holdout'; ...
    """

    image_id: str
    patient_key: str
    study_key: str
    label: str
    split: str

    def __post_init__(self) -> None:
        if not self.image_id.strip():
            message = "a splits row has an empty image_id; every row needs one."
            raise SplitsFileError(message)
        if self.split not in SPLITS:
            message = (
                f"image {self.image_id} has split {self.split!r}; expected one of "
                f"{', '.join(SPLITS)}."
            )
            raise SplitsFileError(message)


def write_splits_file(path: Path, rows: Iterable[SplitRow]) -> int:
    """Write ``splits.csv`` atomically; return the number of rows."""
    records = ({**asdict(row), SCHEMA_KEY: SCHEMA_VERSION} for row in rows)
    return write_csv(path, SPLIT_COLUMNS, records)


def read_splits_file(path: Path) -> list[SplitRow]:
    """Read ``splits.csv``, checking its schema version and its columns.

    Raises
    ------
    SchemaVersionError
        A file of another schema version (or an older one, without a version).
    SplitsFileError
        A missing or unreadable file, or a bad row.
    """
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            records = [dict(row) for row in reader]
            columns = list(reader.fieldnames or [])
    except FileNotFoundError as err:
        message = f"The run's splits file {path} is missing; {_FIX}."
        raise SplitsFileError(message) from err
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        message = f"The run's splits file {path} is unreadable ({type(err).__name__}); {_FIX}."
        raise SplitsFileError(message) from err
    if SCHEMA_KEY not in columns:
        check_schema_version(None, SCHEMA_VERSION, artifact="splits", source=path, fix=_FIX)
    missing = [column for column in SPLIT_COLUMNS if column not in columns]
    if missing:
        message = f"The splits file {path} lacks the columns {', '.join(missing)}; {_FIX}."
        raise SplitsFileError(message)
    rows = []
    for record in records:
        check_schema_version(
            record.get(SCHEMA_KEY), SCHEMA_VERSION, artifact="splits", source=path, fix=_FIX
        )
        rows.append(
            SplitRow(
                image_id=record["image_id"] or "",
                patient_key=record["patient_key"] or "",
                study_key=record["study_key"] or "",
                label=record["label"] or "",
                split=record["split"] or "",
            )
        )
    return rows
