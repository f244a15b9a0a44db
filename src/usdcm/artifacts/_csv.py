"""Atomic CSV writing shared by every CSV artifact (manifest, exclusions, splits, predictions)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from usdcm.atomic import atomic_open


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
