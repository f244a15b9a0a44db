"""``metrics.json``: every number of a report, recomputed from ``predictions.csv``.

Owns the file's name, its schema version (a top-level ``schema_version``) and reading and
writing it (atomically). Written by ``report`` (and ``evaluate``); read by whoever audits a
report. Holds keyed pseudonyms and counts only. Never computes a metric:
:mod:`usdcm.metrics` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from usdcm.artifacts._json import read_json_object
from usdcm.artifacts._schema import SCHEMA_KEY, check_schema_version
from usdcm.atomic import atomic_write_text
from usdcm.errors import MetricsFileError

METRICS_JSON = "metrics.json"
SCHEMA_VERSION = 2
"""Version 2: at image and series level ``auc.ci95`` is the patient-clustered bootstrap
interval (``auc.method`` says which; ``auc.delong_ci95`` and ``auc.bootstrap_ci95`` hold
both); new keys ``threshold.convention``, ``sample_size``, ``decision_curve`` and
``recalibration``. Version 1's ``auc.ci95`` was always DeLong's."""
REQUIRED_KEYS = ("level", "positive_class", "n", "threshold", "provenance")
"""Keys every metrics file has; the rest follows :func:`usdcm.metrics.summarize`."""

_FIX = "recompute it with this usdcm (`usdcm report PREDICTIONS.csv --out DIR`)"


class Level(StrEnum):
    """The unit a case of the metrics stands for; images are grouped up to it.

    The one enum of levels: the CLI offers its values as choices, :mod:`usdcm.metrics`
    groups by it, and ``metrics.json`` records its value.
    """

    IMAGE = "image"
    SERIES = "series"
    STUDY = "study"
    PATIENT = "patient"


@dataclass(frozen=True)
class MetricsFile:
    """The content of ``metrics.json`` (without its ``schema_version``).

    >>> MetricsFile({"level": "study"})
    Traceback (most recent call last):
    ...
    usdcm.errors.MetricsFileError: metrics lack the keys positive_class, n, ...
    """

    values: Mapping[str, Any]

    def __post_init__(self) -> None:
        missing = [key for key in REQUIRED_KEYS if key not in self.values]
        if missing:
            message = f"metrics lack the keys {', '.join(missing)}; {_FIX}."
            raise MetricsFileError(message)

    def write(self, path: Path) -> None:
        """Write ``path`` atomically, ``schema_version`` first; NaN is refused."""
        payload = {SCHEMA_KEY: SCHEMA_VERSION, **self.values}
        atomic_write_text(path, json.dumps(payload, indent=1, allow_nan=False) + "\n")

    @classmethod
    def read(cls, path: Path) -> MetricsFile:
        """Read ``path``, checking its schema version.

        Raises
        ------
        SchemaVersionError
            A file of another version, or without one.
        MetricsFileError
            A missing, unreadable or malformed file.
        """
        loaded = read_json_object(path, name="metrics file", error=MetricsFileError, fix=_FIX)
        check_schema_version(
            loaded.pop(SCHEMA_KEY, None), SCHEMA_VERSION, artifact="metrics", source=path, fix=_FIX
        )
        return cls(loaded)
