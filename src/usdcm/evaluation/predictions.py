"""``predictions.csv``: one row per image, the only input ``usdcm report`` needs.

Owns its columns, and reading and writing it atomically. Holds keyed pseudonyms only
(``patient_key``, ``study_key``, ``series_key``), never a DICOM UID or a patient identifier:
the file is meant to leave the folder that holds the pseudonym secret. Never computes a
metric.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from usdcm.errors import UsdcmError
from usdcm.manifest import write_csv

PROB_PREFIX = "prob_"
KEY_COLUMNS = ("image_id", "split", "label")
CONTEXT_COLUMNS = ("patient_key", "study_key", "series_key", "manufacturer", "model", "frames")


class PredictionsError(UsdcmError):
    """A predictions file that is missing, unreadable or lacks columns."""


def prediction_columns(classes: Sequence[str]) -> list[str]:
    """The columns, in order: keys, one ``prob_<class>`` per class, then context.

    >>> prediction_columns(["abnormal", "normal"])[:5]
    ['image_id', 'split', 'label', 'prob_abnormal', 'prob_normal']
    """
    return [*KEY_COLUMNS, *(f"{PROB_PREFIX}{name}" for name in classes), *CONTEXT_COLUMNS]


def write_predictions(path: Path, rows: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> int:
    """Write ``rows`` (with ``prob_<class>`` floats) atomically; return how many."""
    formatted = [
        {key: (f"{value:.8f}" if isinstance(value, float) else value) for key, value in row.items()}
        for row in rows
    ]
    return write_csv(path, prediction_columns(classes), formatted)


def read_predictions(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Read a predictions file; return its rows and its classes (from ``prob_`` columns)."""
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
)


def write_source_predictions(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    excluded: Sequence[Mapping[str, str]],
    classes: Sequence[str],
) -> Path:
    """Write ``usdcm predict``'s CSV and, beside it, ``<name>.excluded.csv``; both atomic.

    Returns the path of the exclusion list.
    """
    from usdcm.manifest import write_excluded

    columns = [*SOURCE_COLUMNS, *(f"{PROB_PREFIX}{name}" for name in classes), "predicted"]
    formatted = [
        {k: (f"{v:.8f}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows
    ]
    write_csv(path, columns, formatted)
    excluded_path = path.with_name(f"{path.stem}.excluded.csv")
    write_excluded(excluded_path, excluded)
    return excluded_path
