"""``predictions.csv``: one row per image, the only input ``usdcm report`` needs; and the
CSV of ``usdcm predict``.

Owns their columns, their schema version (a ``schema_version`` column), and reading and
writing them atomically. Holds keyed pseudonyms only (``patient_key``, ``study_key``,
``series_key``), never a DICOM UID or a patient identifier: the files are meant to leave
the folder that holds the pseudonym secret. A predictions file written by another tool,
without a ``schema_version`` column, is read; one of another version is refused. Never
computes a metric.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usdcm.artifacts._csv import write_csv
from usdcm.artifacts._schema import SCHEMA_KEY, check_schema_version
from usdcm.errors import PredictionsError

PREDICTIONS_CSV = "predictions.csv"
"""The name ``usdcm evaluate`` gives the file in its output folder."""

OOF_PREDICTIONS_CSV = "oof_predictions.csv"
"""A cross-validated run's out-of-fold predictions, ``RUN/oof_predictions.csv``: every
non-test image once, predicted by the best checkpoint of the fold that validated on it,
in this file's format with split :data:`OOF_SPLIT`."""

OOF_SPLIT = "oof"
"""The ``split`` value of an out-of-fold row; the report chooses its threshold on these rows
when a run has folds (they stand where a plain run's val rows stand)."""

SCHEMA_VERSION = 2
"""Version 2 has study_key/series_key and schema_version; version 1 (no column) had UIDs."""

_FIX = "re-run `usdcm evaluate` with this usdcm to write it anew"

PROB_PREFIX = "prob_"
KEY_COLUMNS = ("image_id", "split", "label")
DEMOGRAPHIC_COLUMNS = ("sex", "age_band", "study_year")
"""Copied from the manifest: a sex code, a 10-year age band, a year (never a date). A file
written before they were added lacks them: :func:`read_predictions` reads them as ``""``."""
CONTEXT_COLUMNS = (
    "patient_key",
    "study_key",
    "series_key",
    "manufacturer",
    "model",
    "frames",
    *DEMOGRAPHIC_COLUMNS,
)


@dataclass(frozen=True)
class Predictions:
    """The rows of a predictions file and its classes (from its ``prob_`` columns).

    >>> Predictions(rows=(), classes=("abnormal",))
    Traceback (most recent call last):
    ...
    usdcm.errors.PredictionsError: predictions need two classes or more, ...
    """

    rows: tuple[dict[str, str], ...]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            message = (
                f"predictions need two classes or more, each once; found {list(self.classes)}."
            )
            raise PredictionsError(message)

    @classmethod
    def read(cls, path: Path) -> Predictions:
        """Read ``path`` (see :func:`read_predictions`)."""
        rows, classes = read_predictions(path)
        return cls(rows=tuple(rows), classes=tuple(classes))


def prediction_columns(classes: Sequence[str]) -> list[str]:
    """The columns, in order: keys, one ``prob_<class>`` per class, then context.

    >>> prediction_columns(["abnormal", "normal"])[:5]
    ['image_id', 'split', 'label', 'prob_abnormal', 'prob_normal']
    """
    return [
        *KEY_COLUMNS,
        *(f"{PROB_PREFIX}{name}" for name in classes),
        *CONTEXT_COLUMNS,
        SCHEMA_KEY,
    ]


def write_predictions(path: Path, rows: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> int:
    """Write ``rows`` (with ``prob_<class>`` floats) atomically; return how many."""
    formatted = [
        {
            **{k: (f"{v:.8f}" if isinstance(v, float) else v) for k, v in row.items()},
            SCHEMA_KEY: SCHEMA_VERSION,
        }
        for row in rows
    ]
    return write_csv(path, prediction_columns(classes), formatted)


def read_predictions(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Read a predictions file; return its rows and its classes (from ``prob_`` columns).

    A file without the :data:`DEMOGRAPHIC_COLUMNS` (written before them) is read with
    them empty.

    Raises
    ------
    SchemaVersionError
        A file of another schema version (a file without the column is read).
    PredictionsError
        A missing or unreadable file, or one without image_id, label and two prob_ columns.
    """
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = [dict(row) for row in reader]
    except FileNotFoundError as err:
        message = f"No predictions file at {path}; `usdcm evaluate` writes predictions.csv."
        raise PredictionsError(message) from err
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        message = f"The predictions file {path} is unreadable ({type(err).__name__})."
        raise PredictionsError(message) from err
    for row in rows:
        check_schema_version(
            row.get(SCHEMA_KEY),
            SCHEMA_VERSION,
            artifact="predictions",
            source=path,
            fix=_FIX,
            missing_ok=True,
        )
    for row in rows:
        for column in DEMOGRAPHIC_COLUMNS:
            row.setdefault(column, "")  # an older file: unknown
    classes = [c[len(PROB_PREFIX) :] for c in columns if c.startswith(PROB_PREFIX)]
    missing = [c for c in ("image_id", "label") if c not in columns]
    if missing or len(classes) < 2:
        message = (
            f"The predictions file {path} needs the columns image_id, label and a "
            f"prob_<class> column per class (two or more); it lacks "
            f"{', '.join(missing) or 'prob_ columns'}."
        )
        raise PredictionsError(message)
    return rows, classes


SOURCE_COLUMNS = (
    "image_id",
    "patient_key",
    "study_key",
    "series_key",
    "manufacturer",
    "model",
    "frames",
    *DEMOGRAPHIC_COLUMNS,
)
"""The columns of ``usdcm predict``'s CSV before the probabilities: pseudonymous keys, the
scanner, and the same coarse demographics as the manifest (for subgroup analyses)."""


def write_source_predictions(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    excluded: Sequence[Mapping[str, str]],
    classes: Sequence[str],
) -> Path:
    """Write ``usdcm predict``'s CSV and, beside it, ``<name>.excluded.csv``; both atomic.

    Returns the path of the exclusion list.
    """
    from usdcm.artifacts.manifest import write_excluded

    columns = [
        *SOURCE_COLUMNS,
        *(f"{PROB_PREFIX}{name}" for name in classes),
        "predicted",
        SCHEMA_KEY,
    ]
    formatted = [
        {
            **{k: (f"{v:.8f}" if isinstance(v, float) else v) for k, v in row.items()},
            SCHEMA_KEY: SCHEMA_VERSION,
        }
        for row in rows
    ]
    write_csv(path, columns, formatted)
    excluded_path = path.with_name(f"{path.stem}.excluded.csv")
    write_excluded(excluded_path, excluded)
    return excluded_path
