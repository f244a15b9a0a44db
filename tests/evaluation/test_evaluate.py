from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from tests.evaluation.conftest import Evaluated
from tests.training.conftest import tiny_config, write_tiny_manifest

from usdcm.artifacts.metrics import Level
from usdcm.evaluation.evaluate import (
    EvaluationError,
    ManifestChangedError,
    default_level,
    evaluate_run,
)
from usdcm.evaluation.reporting import ReportOptions, build_report
from usdcm.training.run import train


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_predictions_hold_val_and_test_of_the_run(evaluated_run: Evaluated) -> None:
    rows = _rows(evaluated_run.predictions)
    with (evaluated_run.run / "splits.csv").open(encoding="utf-8") as handle:
        splits = {r["image_id"]: r["split"] for r in csv.DictReader(handle)}
    assert {r["split"] for r in rows} == {"val", "test"}
    for row in rows:
        assert splits[row["image_id"]] == row["split"]
        total = float(row["prob_abnormal"]) + float(row["prob_normal"])
        assert total == pytest.approx(1.0, abs=1e-6)
        assert row["patient_key"] and row["study_key"] and row["series_key"] and row["manufacturer"]
    expected = sum(1 for split in splits.values() if split in ("val", "test"))
    assert len(rows) == expected


def test_labels_per_accession_make_study_the_default_level(evaluated_run: Evaluated) -> None:
    manifest = evaluated_run.ingested.root / "manifest.csv"
    assert default_level(manifest) == "study"
    context = json.loads((evaluated_run.eval_dir / "evaluation.json").read_text())
    assert context["default_level"] == "study"
    assert context["model"]["checkpoint_sha256"]


def test_report_on_the_predictions_gives_evaluates_numbers(
    evaluated_run: Evaluated, tmp_path: Path
) -> None:
    options = ReportOptions(n_bootstrap=200)
    first = build_report(evaluated_run.predictions, evaluated_run.eval_dir, options)
    copy = tmp_path / "predictions.csv"
    copy.write_bytes(evaluated_run.predictions.read_bytes())
    (tmp_path / "evaluation.json").write_bytes(
        (evaluated_run.eval_dir / "evaluation.json").read_bytes()
    )
    second = build_report(copy, tmp_path / "again", options)
    a = {k: v for k, v in first.metrics.items() if k != "provenance"}
    b = {k: v for k, v in second.metrics.items() if k != "provenance"}
    assert a == b
    assert a["level"] == "study"
    assert a["threshold"]["chosen_on"] == "val"
    assert a["threshold"]["exploratory"] is False
    assert (
        first.metrics["provenance"]["predictions_sha256"]
        == (second.metrics["provenance"]["predictions_sha256"])
    )
    for name in ("metrics", "html", "markdown"):
        assert first.files[name].is_file(), name


def test_without_val_rows_the_threshold_is_exploratory(
    evaluated_run: Evaluated, tmp_path: Path
) -> None:
    rows = [r for r in _rows(evaluated_run.predictions) if r["split"] == "test"]
    path = tmp_path / "predictions.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = build_report(path, tmp_path / "out", ReportOptions(level=Level.IMAGE, n_bootstrap=50))
    assert report.metrics["threshold"]["exploratory"] is True
    fixed = build_report(path, tmp_path / "fixed", ReportOptions(threshold="0.5", n_bootstrap=50))
    assert fixed.metrics["threshold"]["value"] == 0.5
    assert fixed.metrics["threshold"]["exploratory"] is False


def test_external_manifest_is_evaluated_whole(evaluated_run: Evaluated, tmp_path: Path) -> None:
    external = write_tiny_manifest(tmp_path / "external", side=40)
    predictions, context = evaluate_run(
        evaluated_run.run, tmp_path / "out", manifest=external, device="cpu"
    )
    rows = _rows(predictions)
    assert {r["split"] for r in rows} == {"val", "external"}
    assert sum(r["split"] == "external" for r in rows) == 28
    assert context["split"] == "external"


def test_an_empty_split_is_a_clear_error(evaluated_run: Evaluated, tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="holds no labelled images"):
        evaluate_run(evaluated_run.run, tmp_path / "out", split="nope", device="cpu")


def _rewrite_labels(manifest: Path) -> None:
    """Re-write ``manifest`` in place with two labels swapped, as a re-run ingest could."""
    rows = _rows(manifest)
    rows[0]["label"], rows[1]["label"] = rows[1]["label"], rows[0]["label"]
    assert rows[0]["label"] != rows[1]["label"]
    with manifest.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def changed_run(tmp_path: Path) -> tuple[Path, Path, str]:
    """A tiny run whose manifest was re-written after training; and the trained sha256."""
    manifest = write_tiny_manifest(tmp_path / "data", side=24)
    trained_sha = hashlib.sha256(manifest.read_bytes()).hexdigest()
    train(manifest, tiny_config(optim={"epochs": 1}), tmp_path / "run")
    _rewrite_labels(manifest)
    return tmp_path / "run", manifest, trained_sha


def test_a_changed_manifest_is_refused_naming_both_hashes(
    changed_run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    run, manifest, trained_sha = changed_run
    actual = hashlib.sha256(manifest.read_bytes()).hexdigest()
    with pytest.raises(ManifestChangedError) as caught:
        evaluate_run(run, tmp_path / "out", device="cpu")
    message = str(caught.value)
    assert trained_sha in message and actual in message
    assert "--allow-changed-manifest" in message and "\n" not in message
    assert not (tmp_path / "out" / "predictions.csv").exists()

    _, context = evaluate_run(run, tmp_path / "out", device="cpu", allow_changed_manifest=True)
    assert context["model"]["manifest_check"] == {
        "status": "changed",
        "expected_sha256": trained_sha,
        "actual_sha256": actual,
    }
    written = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert written["model"]["manifest_check"]["status"] == "changed"


def test_an_unchanged_manifest_is_recorded_as_matched(evaluated_run: Evaluated) -> None:
    context = json.loads((evaluated_run.eval_dir / "evaluation.json").read_text())
    check = context["model"]["manifest_check"]
    manifest = evaluated_run.ingested.root / "manifest.csv"
    sha = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert check == {"status": "matched", "expected_sha256": sha, "actual_sha256": sha}
