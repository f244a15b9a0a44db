"""Evaluating a cross-validated run: the ensemble on test, out-of-fold rows for the threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.evaluation.conftest import Evaluated

from usdcm.artifacts.metrics import Level
from usdcm.artifacts.predictions import read_predictions
from usdcm.artifacts.splits import read_splits_file
from usdcm.errors import EvaluationError
from usdcm.evaluation.evaluate import evaluate_run
from usdcm.evaluation.reporting import ReportOptions, build_report


def test_predictions_hold_the_oof_rows_and_the_ensembles_test_rows(folded_run: Evaluated) -> None:
    rows, classes = read_predictions(folded_run.predictions)
    oof, _ = read_predictions(folded_run.run / "oof_predictions.csv")
    split_rows = read_splits_file(folded_run.run / "splits.csv")
    test_ids = {row.image_id for row in split_rows if row.split == "test"}
    non_test = {row.image_id for row in split_rows if row.split != "test"}

    assert {row["split"] for row in rows} == {"oof", "test"}
    assert {row["image_id"] for row in rows if row["split"] == "test"} == test_ids
    copied = {row["image_id"]: row for row in rows if row["split"] == "oof"}
    assert set(copied) == non_test and len(copied) == len(oof)
    for row in oof:  # copied unchanged, never re-predicted by the ensemble
        for name in classes:
            assert copied[row["image_id"]][f"prob_{name}"] == row[f"prob_{name}"]

    context = json.loads((folded_run.eval_dir / "evaluation.json").read_text())
    assert context["split_info"]["leakage_check"]["status"] == "passed"
    assert [fold["fold"] for fold in context["model"]["folds"]] == [1, 2]
    assert context["model"]["checkpoint"].endswith("folds.json")
    assert "2 cross-validation folds" in context["split_info"]["split_source"]


def test_the_report_chooses_its_threshold_on_the_oof_rows_and_shows_the_folds(
    folded_run: Evaluated, tmp_path: Path
) -> None:
    built = build_report(folded_run.predictions, tmp_path, ReportOptions(n_bootstrap=50))
    metrics = built.metrics
    assert metrics["threshold"]["chosen_on"] == "out-of-fold predictions (oof)"
    assert not metrics["threshold"]["exploratory"]
    cv = metrics["cross_validation"]
    rows, _ = read_predictions(folded_run.predictions)
    assert cv["split"] == "oof" and cv["n"] <= sum(1 for r in rows if r["split"] == "oof")
    assert metrics["n"] < cv["n"] + metrics["n"]  # the test result is separate from oof

    html = built.files["html"].read_text(encoding="utf-8")
    markdown = built.files["markdown"].read_text(encoding="utf-8")
    for text in (html, markdown):
        assert "Cross-validation (out-of-fold)" in text
        assert "Cross-validation folds" in text and "An ensemble of 2 models" in text


def test_the_threshold_moves_with_the_oof_rows_not_with_the_test_rows(
    folded_run: Evaluated, tmp_path: Path
) -> None:
    import csv

    rows, classes = read_predictions(folded_run.predictions)
    positive = "abnormal"
    changed = [dict(row) for row in rows]
    for row in changed:
        if row["split"] == "test":  # moving the test scores must not move the threshold
            row[f"prob_{positive}"] = "0.5"
            row[f"prob_{classes[1 - classes.index(positive)]}"] = "0.5"
    path = tmp_path / "p" / "predictions.csv"
    path.parent.mkdir()
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(changed)
    options = ReportOptions(n_bootstrap=20, level=Level.STUDY)  # no evaluation.json beside path
    first = build_report(folded_run.predictions, tmp_path / "a", options).metrics
    second = build_report(path, tmp_path / "b", options).metrics
    assert first["threshold"]["value"] == second["threshold"]["value"]
    assert first["auc"]["value"] != second["auc"]["value"]  # the test rows did change


@pytest.mark.parametrize("split", ["val", "train"])
def test_a_non_test_split_of_a_cross_validated_run_is_refused_pointing_at_oof(
    folded_run: Evaluated, tmp_path: Path, split: str
) -> None:
    with pytest.raises(EvaluationError, match="oof_predictions.csv"):
        evaluate_run(folded_run.run, tmp_path, split=split, device="cpu")


def test_an_external_manifest_is_scored_by_the_ensemble_with_oof_threshold_rows(
    folded_run: Evaluated, tmp_path: Path
) -> None:
    manifest = folded_run.ingested.root / "manifest.csv"  # its own data: every patient seen
    predictions, context = evaluate_run(folded_run.run, tmp_path, manifest=manifest, device="cpu")
    rows, _ = read_predictions(predictions)
    assert {row["split"] for row in rows} == {"oof", "external"}
    assert context["split_info"]["leakage_check"]["status"] == "failed"  # folds count as seen
    metrics = build_report(predictions, tmp_path / "report", ReportOptions(n_bootstrap=20)).metrics
    assert metrics["threshold"]["chosen_on"] == "out-of-fold predictions (oof)"
