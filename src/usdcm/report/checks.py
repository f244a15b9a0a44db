"""The two checks ``evaluate`` records, as the report reads them: leakage and training manifest.

Owns how the report reads ``split["leakage_check"]`` and ``model["manifest_check"]`` from its
context, tolerant of older ``evaluation.json`` files (a plain string status, missing counts),
and how their counts read in a sentence. Never computes a check (``usdcm.evaluation`` does),
never reads a file, and never holds a key: the checks carry counts only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from usdcm.report._format import as_int

PASSED = "passed"
FAILED = "failed"
NOT_CHECKABLE = "not checkable"
CHANGED = "changed"


@dataclass(frozen=True)
class LeakageStatus:
    """The leakage check as the report shows it.

    Parameters
    ----------
    status : str
        Stripped and lower-cased: ``"passed"``, ``"failed"``, ``"not checkable"``, or what
        an older file held (such as ``"not run"``).
    detail : str
        One sentence from ``evaluate``; empty when the file had none.
    shared_patients, shared_studies : int or None
        Distinct patients and studies of the evaluated images also trained or validated on;
        ``None`` when the file did not count them.
    """

    status: str
    detail: str = ""
    shared_patients: int | None = None
    shared_studies: int | None = None

    @property
    def passed(self) -> bool:
        """Whether the check passed."""
        return self.status == PASSED

    @property
    def failed(self) -> bool:
        """Whether the check found a patient or a study in training or validation."""
        return self.status == FAILED

    def counts(self) -> str:
        """The shared counts as words, or ``""`` when none was recorded.

        >>> LeakageStatus("failed", shared_patients=1, shared_studies=3).counts()
        '1 patient and 3 studies'
        >>> LeakageStatus("failed").counts()
        ''
        """
        parts = [
            _plural(number, word)
            for number, word in (
                (self.shared_patients, "patient"),
                (self.shared_studies, "study"),
            )
            if number is not None
        ]
        return " and ".join(parts)


@dataclass(frozen=True)
class ManifestStatus:
    """The comparison of the training manifest with the hash its checkpoint recorded."""

    status: str
    expected_sha256: str = ""
    actual_sha256: str = ""

    @property
    def changed(self) -> bool:
        """Whether evaluation read another manifest than the one the model was trained on."""
        return self.status == CHANGED


def _plural(number: int, word: str) -> str:
    plural = "studies" if word == "study" else f"{word}s"
    return f"{number} {word if number == 1 else plural}"


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def leakage_status(split: Mapping[str, object]) -> LeakageStatus | None:
    """The leakage check of ``split`` (``ReportContext.split``), or ``None`` when absent.

    ``split["leakage_check"]`` is the object ``evaluate`` writes (``status``, ``detail``,
    ``shared_patients``, ``shared_studies``) or, in older files, the status as a string.

    >>> leakage_status({"leakage_check": " Passed "})
    LeakageStatus(status='passed', detail='', shared_patients=None, shared_studies=None)
    >>> check = leakage_status({"leakage_check": {"status": "failed", "detail": "Leaks.",
    ...                                           "shared_patients": 2, "shared_studies": 0}})
    >>> check.failed, check.counts()
    (True, '2 patients and 0 studies')
    >>> leakage_status({}) is None
    True
    """
    value = split.get("leakage_check")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return LeakageStatus(_text(value).lower())
    return LeakageStatus(
        status=_text(value.get("status")).lower(),
        detail=_text(value.get("detail")),
        shared_patients=as_int(value.get("shared_patients")),
        shared_studies=as_int(value.get("shared_studies")),
    )


def manifest_status(model: Mapping[str, object]) -> ManifestStatus | None:
    """The training manifest check of ``model`` (``ReportContext.model``), or ``None``.

    >>> manifest_status({"manifest_check": {"status": "changed", "expected_sha256": "ab",
    ...                                     "actual_sha256": "cd"}}).changed
    True
    >>> manifest_status({"manifest_check": "matched"}).changed, manifest_status({})
    (False, None)
    """
    value = model.get("manifest_check")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return ManifestStatus(_text(value).lower())
    return ManifestStatus(
        status=_text(value.get("status")).lower(),
        expected_sha256=_text(value.get("expected_sha256")),
        actual_sha256=_text(value.get("actual_sha256")),
    )
