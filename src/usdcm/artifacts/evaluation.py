"""``evaluation.json``: what the report says about the data, the split and the model.

Owns the file's shape, its schema version, and reading and writing it (atomically), plus
the two checks it records: the leakage check (:class:`LeakageCheck`) and the comparison of
the training manifest with the checkpoint (:class:`ManifestCheck`). Written by
``evaluate``, read by ``report``. Holds no patient identifier, no DICOM UID and no key of
a leaked patient or study (counts only). Never computes a check: :mod:`usdcm.evaluation`
does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from usdcm.errors import UsdcmError

LEAKAGE_STATUSES = ("passed", "failed", "not checkable")
MANIFEST_STATUSES = ("matched", "changed")


class EvaluationFileError(UsdcmError):
    """An ``evaluation.json`` that is unreadable or malformed."""


@dataclass(frozen=True)
class LeakageCheck:
    """Whether a patient or a study of the evaluated images was also trained or validated on.

    ``detail`` is one sentence without any key that says what was compared and, unless the
    check passed, what to do. The counts are of distinct shared patients and studies.

    >>> LeakageCheck("passed", "No patient or study is in two splits.").to_dict()["status"]
    'passed'
    >>> LeakageCheck("maybe", "")
    Traceback (most recent call last):
    ...
    usdcm.artifacts.evaluation.EvaluationFileError: leakage check status 'maybe'; ...
    """

    status: str
    detail: str
    shared_patients: int = 0
    shared_studies: int = 0

    def __post_init__(self) -> None:
        if self.status not in LEAKAGE_STATUSES:
            message = (
                f"leakage check status {self.status!r}; expected one of "
                f"{', '.join(LEAKAGE_STATUSES)}."
            )
            raise EvaluationFileError(message)
        if self.shared_patients < 0 or self.shared_studies < 0:
            message = "leakage check counts must be 0 or more."
            raise EvaluationFileError(message)
        if self.status == "failed" and not (self.shared_patients or self.shared_studies):
            message = "a failed leakage check must count a shared patient or study."
            raise EvaluationFileError(message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``split_info.leakage_check``."""
        return {
            "status": self.status,
            "detail": self.detail,
            "shared_patients": self.shared_patients,
            "shared_studies": self.shared_studies,
        }

    @classmethod
    def from_dict(cls, value: Any) -> LeakageCheck:
        """Rebuild from :meth:`to_dict`'s object."""
        if not isinstance(value, dict):
            message = f"leakage_check is {value!r}; expected an object with a status."
            raise EvaluationFileError(message)
        return cls(
            status=str(value.get("status", "")),
            detail=str(value.get("detail", "")),
            shared_patients=int(value.get("shared_patients", 0)),
            shared_studies=int(value.get("shared_studies", 0)),
        )


@dataclass(frozen=True)
class ManifestCheck:
    """The training manifest's sha256 as the checkpoint recorded it, and as evaluate read it.

    ``"changed"`` is only ever recorded when the user allowed it
    (``--allow-changed-manifest``); otherwise evaluate refuses.

    >>> ManifestCheck.of("ab", "ab").status, ManifestCheck.of("ab", "cd").status
    ('matched', 'changed')
    """

    status: str
    expected_sha256: str
    actual_sha256: str

    def __post_init__(self) -> None:
        if self.status not in MANIFEST_STATUSES:
            message = f"manifest check status {self.status!r}; expected matched or changed."
            raise EvaluationFileError(message)
        if (self.status == "matched") != (self.expected_sha256 == self.actual_sha256):
            message = f"manifest check {self.status!r} contradicts its two hashes."
            raise EvaluationFileError(message)

    @classmethod
    def of(cls, expected: str, actual: str) -> ManifestCheck:
        """The check of two hashes."""
        return cls("matched" if expected == actual else "changed", expected, actual)

    def to_dict(self) -> dict[str, str]:
        """The JSON object of ``model.manifest_check``."""
        return {
            "status": self.status,
            "expected_sha256": self.expected_sha256,
            "actual_sha256": self.actual_sha256,
        }

    @classmethod
    def from_dict(cls, value: Any) -> ManifestCheck:
        """Rebuild from :meth:`to_dict`'s object."""
        if not isinstance(value, dict):
            message = f"manifest_check is {value!r}; expected an object with a status."
            raise EvaluationFileError(message)
        return cls(
            status=str(value.get("status", "")),
            expected_sha256=str(value.get("expected_sha256", "")),
            actual_sha256=str(value.get("actual_sha256", "")),
        )
