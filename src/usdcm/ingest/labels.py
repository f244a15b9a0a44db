"""Join labels from a user's CSV onto SOP instances through one DICOM key column.

The key values (PatientID, AccessionNumber...) are identifiers: they are compared only as
keyed HMACs and never written or quoted in messages.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from usdcm.errors import LabelsError
from usdcm.privacy import ProjectSecret

JOIN_KEYWORDS: tuple[str, ...] = (
    "PatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)
"""DICOM keywords a labels CSV may be keyed on."""

LABEL_COLUMN = "label"


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "").replace(" ", "").replace("-", "")


def match_key_column(name: str) -> str | None:
    """Return the DICOM keyword a CSV column names, accepting case and snake_case variants.

    >>> match_key_column("accession_number"), match_key_column("StudyInstanceUID")
    ('AccessionNumber', 'StudyInstanceUID')
    >>> match_key_column("patient_name") is None
    True
    """
    wanted = _normalise(name)
    for keyword in JOIN_KEYWORDS:
        if _normalise(keyword) == wanted:
            return keyword
    return None


def join_hash(secret: ProjectSecret, keyword: str, value: str) -> str:
    """The keyed hash under which a key value is compared (never the value itself)."""
    return secret.pseudonym(value, namespace=f"join:{keyword}")


@dataclass
class LabelTable:
    """Labels keyed by the HMAC of one DICOM key column's values."""

    keyword: str
    labels: dict[str, str]
    rows: int
    empty_labels: int
    matched: set[str] = field(default_factory=set)

    def lookup(self, hashed_keys: dict[str, str]) -> str | None:
        """The label for an instance, given its hashed join keys; records the match."""
        return self.lookup_key(hashed_keys.get(self.keyword))

    def lookup_key(self, key: str | None) -> str | None:
        """The label for the hashed value of this table's key column; records the match."""
        if key is None or key not in self.labels:
            return None
        self.matched.add(key)
        return self.labels[key]

    def summary(self, unlabelled_images: int) -> dict[str, int | str]:
        """Counts for ``ingest.json``."""
        return {
            "key": self.keyword,
            "rows": self.rows,
            "distinct_keys": len(self.labels),
            "empty_labels": self.empty_labels,
            "matched_keys": len(self.matched),
            "unmatched_keys": len(self.labels) - len(self.matched),
            "unlabelled_images": unlabelled_images,
        }


def read_labels(path: Path, secret: ProjectSecret) -> LabelTable:
    """Read a labels CSV: exactly one key column named after a DICOM keyword, and ``label``.

    Raises ``LabelsError`` for a missing or unreadable file, a missing ``label`` column, zero
    or several key columns, or one key given two different labels (by row number only).
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            label_columns = [c for c in columns if _normalise(c) == LABEL_COLUMN]
            if not label_columns:
                message = (
                    f"The labels file {path} has no 'label' column (found: {', '.join(columns)}); "
                    "add one."
                )
                raise LabelsError(message)
            keyed = {c: kw for c in columns if (kw := match_key_column(c)) is not None}
            if len(keyed) != 1:
                found = ", ".join(keyed) if keyed else "none"
                message = (
                    f"The labels file {path} needs exactly one key column named after one of "
                    f"{', '.join(JOIN_KEYWORDS)}; found {found}."
                )
                raise LabelsError(message)
            ((key_column, keyword),) = keyed.items()
            table = LabelTable(keyword=keyword, labels={}, rows=0, empty_labels=0)
            for line, row in enumerate(reader, start=2):
                table.rows += 1
                value = (row.get(key_column) or "").strip()
                label = (row.get(label_columns[0]) or "").strip()
                if not value or not label:
                    table.empty_labels += 1
                    continue
                hashed = join_hash(secret, keyword, value)
                previous = table.labels.setdefault(hashed, label)
                if previous != label:
                    message = (
                        f"The labels file {path} gives two labels ({previous!r} and {label!r}) "
                        f"to the same {keyword} (line {line}); keep one."
                    )
                    raise LabelsError(message)
    except FileNotFoundError as err:
        message = f"The labels file {path} does not exist; check the --labels path."
        raise LabelsError(message) from err
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        message = f"The labels file {path} is unreadable ({type(err).__name__}); use UTF-8 CSV."
        raise LabelsError(message) from err
    return table
