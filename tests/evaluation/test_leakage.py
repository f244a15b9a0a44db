"""The leakage check is computed (issue 8, defect 1): real splits that do and do not leak,
and external manifests ingested with the training secret, with another one, or unknown."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.evaluation.conftest import Evaluated

from usdcm.artifacts.evaluation import LeakageCheck
from usdcm.artifacts.splits import SplitRow, read_splits_file, write_splits_file
from usdcm.errors import EvaluationFileError
from usdcm.evaluation.evaluate import evaluate_run
from usdcm.evaluation.leakage import check_external, check_run_splits
from usdcm.ingest import IngestOptions, ingest
from usdcm.ingest.pipeline import STATE_DIR
from usdcm.synth import write_export


def _context(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / "evaluation.json").read_text())
    return loaded


def _keys(folder: Path) -> set[str]:
    """The patient and study keys of the external rows of ``folder``'s predictions."""
    with (folder / "predictions.csv").open(encoding="utf-8", newline="") as handle:
        return {
            value
            for row in csv.DictReader(handle)
            if row["split"] == "external"
            for value in (row["patient_key"], row["study_key"])
        }


def test_a_real_run_passes_its_own_splits(evaluated_run: Evaluated) -> None:
    check = _context(evaluated_run.eval_dir)["split_info"]["leakage_check"]
    assert check["status"] == "passed"
    assert check["shared_patients"] == check["shared_studies"] == 0
    assert "more than one split" in check["detail"]


def test_an_edited_splits_csv_that_leaks_fails_with_counts_and_no_keys(
    evaluated_run: Evaluated, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(evaluated_run.run, run)
    rows = read_splits_file(run / "splits.csv")
    tested = next(row for row in rows if row.split == "test")
    trained = next(i for i, row in enumerate(rows) if row.split == "train")
    # a training image filed under the test patient and study: both now sit in two splits
    rows[trained] = SplitRow(
        rows[trained].image_id, tested.patient_key, tested.study_key, rows[trained].label, "train"
    )
    write_splits_file(run / "splits.csv", rows)

    evaluate_run(run, tmp_path / "eval", device="cpu")
    context = _context(tmp_path / "eval")
    check = context["split_info"]["leakage_check"]
    assert check["status"] == "failed"
    assert (check["shared_patients"], check["shared_studies"]) == (1, 1)
    assert "1 patient and 1 study" in check["detail"]
    text = json.dumps(context)
    assert tested.patient_key not in text and tested.study_key not in text


def test_run_splits_fall_back_on_the_manifests_study_uid_for_keyless_rows() -> None:
    rows = [SplitRow("a", "p1", "", "x", "train"), SplitRow("b", "p2", "", "x", "test")]
    manifest = [
        {"image_id": "a", "study_uid": "1.2.9"},
        {"image_id": "b", "study_uid": "1.2.9"},
    ]
    leaked = check_run_splits(rows, manifest)
    assert (leaked.status, leaked.shared_patients, leaked.shared_studies) == ("failed", 0, 1)
    assert "1.2.9" not in leaked.detail
    unknown = check_run_splits(rows)
    assert unknown.status == "passed"
    assert "2 images name no study, so only their patient was compared" in unknown.detail


def test_external_manifests_compare_patients_and_studies_with_train_and_val(
    evaluated_run: Evaluated, tmp_path: Path
) -> None:
    ingested = evaluated_run.ingested
    train_secret = ingested.root / STATE_DIR / "secret"

    # 1. the training manifest itself, as external: every train/val patient is shared
    evaluate_run(
        evaluated_run.run,
        tmp_path / "self",
        manifest=ingested.root / "manifest.csv",
        device="cpu",
    )
    splits = read_splits_file(evaluated_run.run / "splits.csv")
    seen = [row for row in splits if row.split in ("train", "val")]
    labelled = {row["image_id"] for row in ingested.rows if row["label"].strip()}
    check = _context(tmp_path / "self")["split_info"]["leakage_check"]
    assert check["status"] == "failed"
    assert check["shared_patients"] == len({row.patient_key for row in seen})
    assert check["shared_studies"] == len({row.study_key for row in seen})
    assert {row.image_id for row in seen} <= labelled

    # 2. the same export ingested with another secret: keys cannot match, UIDs still do
    other = tmp_path / "other-secret"
    export = ingested.export
    ingest(export.root, other, IngestOptions(labels=export.labels_path, workers=1))
    evaluate_run(
        evaluated_run.run, tmp_path / "other", manifest=other / "manifest.csv", device="cpu"
    )
    check = _context(tmp_path / "other")["split_info"]["leakage_check"]
    assert check["status"] == "failed"
    assert check["shared_patients"] == 0
    assert check["shared_studies"] == len({row.study_key for row in seen})
    assert "patients could not be compared" in check["detail"]
    assert not _keys(tmp_path / "other") & _keys(tmp_path / "self")  # keys differ indeed

    # 3. new patients with another secret: nothing can be said, and the fix is named
    fresh = write_export(tmp_path / "fresh-pacs", patients=4, seed=1)
    unknown = tmp_path / "fresh-own-secret"
    ingest(fresh.root, unknown, IngestOptions(labels=fresh.labels_path, workers=1))
    evaluate_run(
        evaluated_run.run, tmp_path / "unknown", manifest=unknown / "manifest.csv", device="cpu"
    )
    check = _context(tmp_path / "unknown")["split_info"]["leakage_check"]
    assert check["status"] == "not checkable"
    assert "another pseudonym secret" in check["detail"]
    assert "--secret-file" in check["detail"]

    # 4. the same new patients ingested with the training secret: checkable, and clean
    checkable = tmp_path / "fresh-train-secret"
    options = IngestOptions(labels=fresh.labels_path, workers=1, secret_path=train_secret)
    ingest(fresh.root, checkable, options)
    evaluate_run(
        evaluated_run.run, tmp_path / "clean", manifest=checkable / "manifest.csv", device="cpu"
    )
    check = _context(tmp_path / "clean")["split_info"]["leakage_check"]
    assert check["status"] == "passed", check
    assert check["shared_patients"] == check["shared_studies"] == 0


def test_an_unknown_secret_with_no_shared_key_is_not_checkable() -> None:
    seen = [SplitRow("a", "p1", "s1", "x", "train")]
    evaluated = [{"image_id": "z", "patient_key": "p9", "study_key": "s9"}]
    check = check_external(evaluated, seen, same_secret=None)
    assert check.status == "not checkable"
    assert "cannot be told" in check.detail and "--secret-file" in check.detail
    assert check_external(evaluated, seen, same_secret=True).status == "passed"
    # a key that matches proves the secret was the same, whatever the fingerprints say
    shared = [{"image_id": "z", "patient_key": "p1", "study_key": "s9"}]
    found = check_external(shared, seen, same_secret=None)
    assert (found.status, found.shared_patients, found.shared_studies) == ("failed", 1, 0)


@pytest.mark.parametrize(("status", "patients"), [("failed", 0), ("maybe", 0), ("passed", -1)])
def test_a_leakage_check_that_contradicts_itself_is_refused(status: str, patients: int) -> None:
    with pytest.raises(EvaluationFileError, match="leakage check"):
        LeakageCheck(status, "", shared_patients=patients)


def test_a_patient_in_two_folds_of_a_cross_validated_run_fails_the_recheck() -> None:
    apart = [
        SplitRow("a", "p1", "s1", "x", "train", fold=1),
        SplitRow("b", "p2", "s2", "x", "train", fold=2),
        SplitRow("c", "p3", "s3", "x", "test"),
    ]
    assert check_run_splits(apart).status == "passed"
    shared = [*apart, SplitRow("d", "p1", "s4", "x", "train", fold=2)]
    check = check_run_splits(shared)
    assert (check.status, check.shared_patients, check.shared_studies) == ("failed", 1, 0)
