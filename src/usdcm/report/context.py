"""What the report needs besides the metrics: intended use, data, split, model, commands.

Owns :class:`ReportContext`, a plain record the caller fills from ingest, split and training;
never reads a file and never computes a metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TITLE = "Clinical validation report"


@dataclass(frozen=True)
class ReportContext:
    """Everything the report states that the metrics dict does not hold; every field optional.

    Keys not listed below are shown too, as ``key: value`` rows, so nothing the caller
    passes is dropped silently. None of these may hold a patient identifier or a DICOM UID:
    use the keyed pseudonyms that ingest assigns (``patient_key``, ``study_key``,
    ``series_key``, ``image_id``).

    Parameters
    ----------
    title : str
        The report's title.
    intended_use : str
        Who uses the model, on which patients, for which decision.
    data : mapping
        ``sources`` (str or list of str), ``manufacturers`` and ``models``
        (``{name: image count}``), ``exclusions`` (``{reason_code: count}`` from ingest),
        ``labels`` (``{label: count}``), ``files_in_export``, ``label_key`` and
        ``label_counts_by_split`` (``{split: {label: count}}``, TRIPOD+AI 21). Other keys
        are shown as labelled rows.
    split : mapping
        ``counts`` (``{split: count}`` or ``{split: {level: count}}``), ``split_source``
        (e.g. ``"manifest column"``) and ``leakage_check``, as ``evaluation.json`` records
        it: ``{"status": "passed" | "failed" | "not checkable", "detail": str,
        "shared_patients": int, "shared_studies": int}`` (counts only, never a key). An
        older file's plain string (``"passed"``, ``"not run"``) is read as the status. A
        failed check opens the report; failed and not checkable are limitations.
    model : mapping
        ``architecture``, ``config`` (nested mapping), ``checkpoint_sha256``, ``versions``
        (``{package: version}``), ``best_epoch``, ``val_auc`` and ``manifest_check``:
        ``{"status": "matched" | "changed", "expected_sha256": str, "actual_sha256": str}``,
        the training manifest's hash as the checkpoint recorded it and as evaluate read it;
        ``"changed"`` is stated in the Summary and flagged as a limitation.
    commands : sequence of str
        The exact commands that reproduce the run, in order.
    failure_thumbnails : mapping of str to bytes
        PNG bytes per aggregated id of a failure case (its ``image_id``, ``series_key``,
        ``study_key`` or ``patient_key``); ids not among the failures are ignored.
    prevalence_by_split : mapping of str to float
        Prevalence of the positive class per split, for the prevalence-shift check.
    reference_standard : str
        How the labels were established and by whom (``evaluation.json``
        ``reference_standard``, or ``usdcm report --reference-standard``); empty is stated
        in the report and flagged as a limitation.
    flow : mapping
        The STARD 19 participant flow counts of ``evaluation.json`` ``flow``:
        ``files_in_export``, ``excluded`` (``{reason: n}``), ``images``, ``unlabelled``,
        ``labelled``, ``by_split`` (``{split: n}``), ``evaluated_split``,
        ``evaluated_images``, ``scored_images`` and ``unscored`` (``{reason: n}``).
    deidentification : mapping
        What ingest did and did not do to de-identify (``evaluation.json``
        ``deidentification``): ``pseudonyms``, ``region_crop`` (``images``, ``cropped``,
        ``without_region``), ``uids_in_outputs``, ``done`` and ``not_done`` (sentences).
    study_years : mapping of str to int
        Evaluated images per study year (years only, never a date).

    Examples
    --------
    >>> ReportContext(intended_use="Triage of adnexal masses").title
    'Clinical validation report'
    """

    title: str = DEFAULT_TITLE
    intended_use: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    split: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    commands: Sequence[str] = ()
    failure_thumbnails: Mapping[str, bytes] = field(default_factory=dict)
    prevalence_by_split: Mapping[str, float] = field(default_factory=dict)
    reference_standard: str = ""
    flow: Mapping[str, Any] = field(default_factory=dict)
    deidentification: Mapping[str, Any] = field(default_factory=dict)
    study_years: Mapping[str, int] = field(default_factory=dict)


def evaluation_fields(
    evaluation: Mapping[str, Any], reference_standard: str | None = None
) -> dict[str, Any]:
    """The :class:`ReportContext` fields ``evaluation.json`` supplies for the STARD sections.

    Read tolerantly: an older file without the keys (or with a wrong type) gives empty
    values, which the report states as not recorded. ``reference_standard``, when given and
    not blank, overrides the file's (``usdcm report --reference-standard``).

    >>> evaluation_fields({"reference_standard": "Histology", "flow": {"images": 4}})
    {'reference_standard': 'Histology', 'flow': {'images': 4}, 'deidentification': {}, 'study_years': {}}
    >>> evaluation_fields({"flow": [1]}, reference_standard="Expert panel")["reference_standard"]
    'Expert panel'
    """  # noqa: E501

    def mapping(key: str) -> dict[str, Any]:
        value = evaluation.get(key)
        return dict(value) if isinstance(value, Mapping) else {}

    recorded = evaluation.get("reference_standard")
    text = reference_standard if reference_standard and reference_standard.strip() else recorded
    return {
        "reference_standard": text.strip() if isinstance(text, str) else "",
        "flow": mapping("flow"),
        "deidentification": mapping("deidentification"),
        "study_years": mapping("study_years"),
    }
