"""The leakage check of an evaluation: was a patient or a study of the evaluated images seen
in training or validation?

Owns the comparison and its honest outcome (:class:`usdcm.artifacts.evaluation.LeakageCheck`):
``passed``, ``failed`` with counts, or ``not checkable`` with why and how to make it
checkable. Never names a key or a UID in its result: only counts leave this module. Never
reads a file: the caller hands it rows.

Within a run, the run's ``splits.csv`` is re-checked (no patient_key or study in two
splits). For an external manifest, its patients and studies are compared with the run's
train and val rows. Keys are keyed pseudonyms, so they match only when both manifests were
ingested with the same secret; the ingest's ``secret_fingerprint`` says whether they were.
StudyInstanceUIDs do not depend on the secret, so shared studies are also found by UID
wherever both manifests carry one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from usdcm.artifacts.evaluation import LeakageCheck
from usdcm.artifacts.splits import SplitRow
from usdcm.data.splits import find_leaks, study_of

Row = Mapping[str, str]

_RECHECK_FIX = (
    "retrain so that usdcm assigns grouped splits, or fix the manifest's split column so "
    "that every image of a patient and of a study is in one split"
)
_SECRET_FIX = (
    "re-ingest the external export with `usdcm ingest --secret-file` pointing at the "
    "training data's secret (its .usdcm/secret) to make it checkable"
)


def _plural(n: int, word: str) -> str:
    """``1 study``, ``2 studies``, ``0 patients``."""
    plural = "studies" if word == "study" else f"{word}s"
    return f"{n} {word if n == 1 else plural}"


def check_run_splits(
    split_rows: Sequence[SplitRow], manifest_rows: Sequence[Row] = ()
) -> LeakageCheck:
    """Re-check a run's ``splits.csv``: no patient and no study in two splits (or two folds).

    ``manifest_rows`` (the run's manifest, when it is still there) supply the study of an
    image whose split row has no ``study_key`` (a hand-written manifest with UIDs only).

    >>> rows = [SplitRow("a", "p1", "s1", "x", "train"), SplitRow("b", "p2", "s1", "x", "test")]
    >>> check = check_run_splits(rows)
    >>> check.status, check.shared_patients, check.shared_studies
    ('failed', 0, 1)
    """
    uids = {
        (row.get("image_id") or "").strip(): (row.get("study_uid") or "").strip()
        for row in manifest_rows
    }
    records = [
        {
            "image_id": row.image_id,
            "patient_key": row.patient_key,
            "study_key": row.study_key,
            "study_uid": uids.get(row.image_id, ""),
        }
        for row in split_rows
    ]
    # a cross-validated run's folds are kept apart too (SplitRow.group is the fold there)
    patients, studies = find_leaks(records, {row.image_id: row.group for row in split_rows})
    without_study = sum(1 for record in records if not study_of(record))
    if patients or studies:
        what = " and ".join(
            text
            for n, text in (
                (len(patients), _plural(len(patients), "patient")),
                (len(studies), _plural(len(studies), "study")),
            )
            if n
        )
        verb = "has" if len(patients) + len(studies) == 1 else "have"
        return LeakageCheck(
            "failed",
            f"{what} of the run's splits.csv {verb} images in more than one split; {_RECHECK_FIX}.",
            shared_patients=len(patients),
            shared_studies=len(studies),
        )
    detail = "No patient and no study of the run's splits.csv has images in more than one split."
    if without_study:
        detail = (
            "No patient and no study of the run's splits.csv has images in more than one "
            f"split; {_plural(without_study, 'image')} name no study, so only their patient "
            "was compared."
        )
    return LeakageCheck("passed", detail)


def check_external(
    evaluated: Sequence[Row],
    seen: Sequence[SplitRow],
    *,
    seen_manifest_rows: Sequence[Row] = (),
    same_secret: bool | None,
) -> LeakageCheck:
    """Compare an external manifest's rows with the run's train and val rows.

    Parameters
    ----------
    evaluated : sequence of mapping
        The external manifest's evaluated rows (``patient_key``, ``study_key``,
        ``study_uid``).
    seen : sequence of SplitRow
        The run's ``splits.csv`` rows of the train and val splits.
    seen_manifest_rows : sequence of mapping
        The run's manifest rows, when it is still there: their ``study_uid`` lets shared
        studies be found whatever the secrets.
    same_secret : bool or None
        Whether both were ingested with the same pseudonym secret (from the two ingests'
        ``secret_fingerprint``); ``None`` when that cannot be told.
    """
    seen_ids = {row.image_id for row in seen}
    seen_patients = {row.patient_key.strip() for row in seen} - {""}
    seen_keys = {row.study_key.strip() for row in seen} - {""}
    seen_uids = {
        uid
        for row in seen_manifest_rows
        if (row.get("image_id") or "").strip() in seen_ids
        and (uid := (row.get("study_uid") or "").strip())
    }
    shared_patients = {
        key for row in evaluated if (key := (row.get("patient_key") or "").strip()) in seen_patients
    }
    shared_studies = set()
    for row in evaluated:
        key = (row.get("study_key") or "").strip()
        uid = (row.get("study_uid") or "").strip()
        if (key and key in seen_keys) or (uid and uid in seen_uids):
            shared_studies.add(study_of(row))
    n_patients, n_studies = len(shared_patients), len(shared_studies)
    if n_patients or n_studies:
        unknown = "" if same_secret or n_patients else "; patients could not be compared"
        return LeakageCheck(
            "failed",
            f"{_plural(n_patients, 'patient')} and {_plural(n_studies, 'study')} of the external "
            f"manifest were also in the run's train or val split{unknown}; evaluate on "
            "patients the model never saw.",
            shared_patients=n_patients,
            shared_studies=n_studies,
        )
    if same_secret:
        return LeakageCheck(
            "passed",
            "No patient and no study of the external manifest is in the run's train or val "
            "split (both ingested with the same pseudonym secret).",
        )
    why = (
        "the external manifest was ingested with another pseudonym secret than the training "
        "data, so their patient keys cannot match"
        if same_secret is False
        else "it cannot be told whether the external manifest was ingested with the training "
        "data's pseudonym secret (an ingest.json without secret_fingerprint), so an absent "
        "match of patient keys proves nothing"
    )
    studies = (
        "; no study is shared by StudyInstanceUID"
        if seen_uids and any((row.get("study_uid") or "").strip() for row in evaluated)
        else ""
    )
    return LeakageCheck("not checkable", f"Not checkable: {why}{studies}; {_SECRET_FIX}.")
