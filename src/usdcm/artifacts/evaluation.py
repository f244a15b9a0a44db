"""``evaluation.json``: what the report says about the data, the split and the model.

Owns the file's shape (:class:`EvaluationContext`), its schema version (a top-level
``schema_version``), and reading and writing it (atomically), plus the two checks it
records: the leakage check (:class:`LeakageCheck`) and the comparison of the training
manifest with the checkpoint (:class:`ManifestCheck`). Written by ``evaluate``, read by
``report``. Holds no patient identifier, no DICOM UID and no key of a leaked patient or
study (counts only). Never computes a check: :mod:`usdcm.evaluation` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usdcm.artifacts._json import read_json_object
from usdcm.artifacts._schema import SCHEMA_KEY, check_schema_version
from usdcm.atomic import atomic_write_text
from usdcm.errors import EvaluationFileError

EVALUATION_JSON = "evaluation.json"
"""The name ``usdcm evaluate`` gives the file, beside ``predictions.csv``."""

SCHEMA_VERSION = 2
"""Version 2: leakage_check an object, model.manifest_check; version 1 had no version.
``reference_standard``, ``flow``, ``deidentification`` and ``study_years`` were added to
version 2 later, each optional: a file without them reads them as empty."""

_FIX = "re-run `usdcm evaluate` with this usdcm to write it anew"

LEAKAGE_STATUSES = ("passed", "failed", "not checkable")
MANIFEST_STATUSES = ("matched", "changed")


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
    usdcm.errors.EvaluationFileError: leakage check status 'maybe'; ...
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


@dataclass(frozen=True)
class EvaluationContext:
    """What ``evaluate`` tells the report: data, split, model and commands; no identifier.

    :meth:`to_dict` gives the JSON object of ``evaluation.json`` (its keys are those the
    report reads: ``split_info`` holds ``counts``, ``split_source`` and ``leakage_check``;
    ``model`` holds ``manifest_check``; ``reference_standard``, ``flow``,
    ``deidentification`` and ``study_years`` are top-level).
    """

    run_dir: str
    manifest: str
    split: str
    default_level: str
    leakage_check: LeakageCheck
    manifest_check: ManifestCheck | None = None
    image_roots: dict[str, str] = field(default_factory=dict)
    intended_use: str = ""
    commands: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    split_counts: dict[str, int] = field(default_factory=dict)
    split_source: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    reference_standard: str = ""
    """How the labels were established and by whom (``--reference-standard`` or the run
    config's ``reference_standard``); ``""`` when nobody said."""
    flow: dict[str, Any] = field(default_factory=dict)
    """The STARD 2015 item 19 counts, from the export's files to the scored images (see
    :func:`usdcm.evaluation.evaluate.participant_flow`); ``{}`` in an older file."""
    deidentification: dict[str, Any] = field(default_factory=dict)
    """What ingest did and did not do to remove identifiers, in sentences, with the
    ultrasound-region counts; ``{}`` in an older file."""
    study_years: dict[str, int] = field(default_factory=dict)
    """Evaluated images per study year (``"(unknown)"`` without one): years, never dates."""

    def __post_init__(self) -> None:
        if not self.split:
            message = "an evaluation context needs the evaluated split."
            raise EvaluationFileError(message)
        if "manifest_check" in self.model:
            message = "give the manifest check as manifest_check, not inside model."
            raise EvaluationFileError(message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``evaluation.json``, with its ``schema_version``."""
        return {
            SCHEMA_KEY: SCHEMA_VERSION,
            "run_dir": self.run_dir,
            "manifest": self.manifest,
            "split": self.split,
            "default_level": self.default_level,
            "image_roots": dict(self.image_roots),
            "intended_use": self.intended_use,
            "commands": list(self.commands),
            "data": dict(self.data),
            "split_info": {
                "counts": dict(self.split_counts),
                "split_source": self.split_source,
                "leakage_check": self.leakage_check.to_dict(),
            },
            "model": {
                **self.model,
                "manifest_check": (
                    self.manifest_check.to_dict() if self.manifest_check is not None else None
                ),
            },
            "reference_standard": self.reference_standard,
            "flow": dict(self.flow),
            "deidentification": dict(self.deidentification),
            "study_years": dict(self.study_years),
        }

    @classmethod
    def from_dict(
        cls, value: dict[str, Any], *, source: Path | str = "evaluation.json"
    ) -> EvaluationContext:
        """Rebuild from :meth:`to_dict`'s object, checking its schema version."""
        check_schema_version(
            value.get(SCHEMA_KEY), SCHEMA_VERSION, artifact="evaluation", source=source, fix=_FIX
        )
        try:
            split_info = dict(value.get("split_info") or {})
            model = dict(value.get("model") or {})
            check = model.pop("manifest_check", None)
            return cls(
                run_dir=str(value.get("run_dir", "")),
                manifest=str(value.get("manifest", "")),
                split=str(value.get("split", "")),
                default_level=str(value.get("default_level", "")),
                leakage_check=LeakageCheck.from_dict(split_info.get("leakage_check")),
                manifest_check=ManifestCheck.from_dict(check) if check is not None else None,
                image_roots={str(k): str(v) for k, v in dict(value["image_roots"]).items()},
                intended_use=str(value.get("intended_use") or ""),
                commands=tuple(str(command) for command in value.get("commands", [])),
                data=dict(value.get("data") or {}),
                split_counts={str(k): int(v) for k, v in dict(split_info["counts"]).items()},
                split_source=str(split_info.get("split_source", "")),
                model=model,
                reference_standard=str(value.get("reference_standard") or ""),
                flow=dict(value.get("flow") or {}),
                deidentification=dict(value.get("deidentification") or {}),
                study_years={
                    str(k): int(v) for k, v in dict(value.get("study_years") or {}).items()
                },
            )
        except (KeyError, TypeError, ValueError, EvaluationFileError) as err:
            message = f"The evaluation file {source} is malformed ({err}); {_FIX}."
            raise EvaluationFileError(message) from err

    def write(self, path: Path) -> None:
        """Write ``path`` atomically (keys sorted, as before)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def read(cls, path: Path) -> EvaluationContext:
        """Read ``path``, checking its schema version and its shape."""
        loaded = read_json_object(path, name="evaluation file", error=EvaluationFileError, fix=_FIX)
        return cls.from_dict(loaded, source=path)
