"""``splits.csv``: which image of a run went to train, val or test, and to which fold.

Owns the file's columns, its schema version, and reading and writing it (atomically).
Written by ``train``, read by ``evaluate`` (to pick the evaluated images and to re-check
leakage). Holds keyed pseudonyms only (``patient_key``, ``study_key``), never a DICOM UID.
Never decides a split: :mod:`usdcm.data.splits` does.

A cross-validated run (``split.folds`` K > 1) writes one file for the whole run: its test
images with split ``test``, and every other image with split ``train`` and its fold
(``1 .. K``) in the ``fold`` column; each ``RUN/fold-<k>/splits.csv`` is a plain file of
that fold's train, val and test images. A plain run leaves ``fold`` empty.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from usdcm.artifacts._csv import write_csv
from usdcm.artifacts._schema import SCHEMA_KEY, check_schema_version
from usdcm.errors import SplitsFileError

SCHEMA_VERSION = 3
"""Version 3 adds ``fold``; version 2 (read too: no fold) has ``study_key`` and
``schema_version``; version 1 (no version column) had a UID."""

_NO_FOLD_VERSION = 2
"""The version of a file without the ``fold`` column, still read (every fold is 0)."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The split names, in the order they are used."""

SPLIT_COLUMNS: tuple[str, ...] = (
    "image_id",
    "patient_key",
    "study_key",
    "label",
    "split",
    "fold",
    SCHEMA_KEY,
)
"""Columns of ``splits.csv``: keyed pseudonyms only, never a DICOM UID."""

_FIX = "retrain the run with this usdcm (`usdcm train`), which writes splits.csv anew"


@dataclass(frozen=True)
class SplitRow:
    """One image of a run and the split it went to.

    ``fold`` is 0 outside cross-validation and for test images; ``k`` (1-based) for an
    image of fold ``k`` of a cross-validated run, whose split is then ``train``.

    >>> SplitRow("img1", "pk1", "sk1", "abnormal", "test").split
    'test'
    >>> SplitRow("img2", "pk2", "sk2", "normal", "train", fold=2).group
    'fold-2'
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
    fold: int = 0

    @property
    def group(self) -> str:
        """What the leakage check keeps apart: the split, or ``fold-<k>`` for a fold's image."""
        return f"fold-{self.fold}" if self.fold else self.split

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
        if self.fold < 0 or (self.fold and self.split != "train"):
            message = (
                f"image {self.image_id} has fold {self.fold} in split {self.split!r}; a fold is "
                "a number from 1 given to training images of a cross-validated run, else 0."
            )
            raise SplitsFileError(message)


def write_splits_file(path: Path, rows: Iterable[SplitRow]) -> int:
    """Write ``splits.csv`` atomically; return the number of rows (fold 0 is an empty cell)."""
    records = ({**asdict(row), "fold": row.fold or "", SCHEMA_KEY: SCHEMA_VERSION} for row in rows)
    return write_csv(path, SPLIT_COLUMNS, records)


def read_splits_file(path: Path) -> list[SplitRow]:
    """Read ``splits.csv``, checking its schema version and its columns.

    Raises
    ------
    SchemaVersionError
        A file of another schema version (or an older one, without a version). A file of
        version 2, which has no ``fold`` column, is read with every fold 0.
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
    has_fold = "fold" in columns
    missing = [c for c in SPLIT_COLUMNS if c not in columns and (has_fold or c != "fold")]
    if missing:
        message = f"The splits file {path} lacks the columns {', '.join(missing)}; {_FIX}."
        raise SplitsFileError(message)
    rows = []
    for record in records:
        found = record.get(SCHEMA_KEY)
        if has_fold or str(found).strip() != str(_NO_FOLD_VERSION):
            check_schema_version(found, SCHEMA_VERSION, artifact="splits", source=path, fix=_FIX)
        rows.append(
            SplitRow(
                image_id=record["image_id"] or "",
                patient_key=record["patient_key"] or "",
                study_key=record["study_key"] or "",
                label=record["label"] or "",
                split=record["split"] or "",
                fold=_fold(record.get("fold"), path),
            )
        )
    return rows


def _fold(value: str | None, path: Path) -> int:
    text = (value or "").strip()
    if not text:
        return 0
    try:
        return int(text)
    except ValueError as err:
        message = f"The splits file {path} has fold {text!r}; expected a whole number; {_FIX}."
        raise SplitsFileError(message) from err
