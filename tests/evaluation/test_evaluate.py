from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.evaluation.conftest import Evaluated
from tests.training.conftest import tiny_config, write_tiny_manifest

from usdcm.artifacts.metrics import Level
from usdcm.evaluation.evaluate import (
    MISSING_IMAGE,
    EvaluationError,
    ManifestChangedError,
    default_level,
    deidentification,
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


def _json(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _independent_flow(
    data: Path, splits_csv: Path | None, predictions: Path, split: str
) -> dict[str, Any]:
    """The STARD flow counted here, from the files alone: ingest.json, manifest.csv,
    splits.csv and predictions.csv, without usdcm's code."""
    ingest = _json(data / "ingest.json")
    manifest = _rows(data / "manifest.csv")
    labelled = [row for row in manifest if row["label"].strip()]
    if splits_csv is None:
        by_split = {split: len(labelled)}
        evaluated = len(labelled)
    else:
        in_manifest = {row["image_id"] for row in manifest}
        groups = Counter(
            f"fold-{row['fold']}" if row.get("fold") not in (None, "", "0") else row["split"]
            for row in _rows(splits_csv)
            if row["image_id"] in in_manifest
        )
        by_split = dict(groups)
        evaluated = groups[split]
    scored = [row for row in _rows(predictions) if row["split"] == split]
    return {
        "files_in_export": ingest["n_files"],
        "excluded": ingest["excluded_by_code"],
        "images": len(manifest),
        "labelled": len(labelled),
        "unlabelled": len(manifest) - len(labelled),
        "by_split": by_split,
        "evaluated_split": split,
        "evaluated_images": evaluated,
        "scored_images": len(scored),
        "scored_by_level": {
            "image": len(scored),
            "series": len({row["series_key"] for row in scored}),
            "study": len({row["study_key"] for row in scored}),
            "patient": len({row["patient_key"] for row in scored}),
        },
    }


def _check_flow_adds_up(flow: dict[str, Any]) -> None:
    assert flow["files_in_export"] == flow["images"] + sum(flow["excluded"].values())
    assert flow["labelled"] + flow["unlabelled"] == flow["images"]
    assert sum(flow["by_split"].values()) == flow["labelled"]
    assert flow["evaluated_images"] == flow["scored_images"] + sum(flow["unscored"].values())
    assert flow["evaluated_images"] == flow["by_split"][flow["evaluated_split"]]


def test_the_stard_flow_adds_up_and_each_arrow_matches_the_artifacts(
    evaluated_run: Evaluated,
) -> None:
    context = _json(evaluated_run.eval_dir / "evaluation.json")
    flow = context["flow"]
    _check_flow_adds_up(flow)
    expected = _independent_flow(
        evaluated_run.ingested.root,
        evaluated_run.run / "splits.csv",
        evaluated_run.predictions,
        "test",
    )
    assert {key: flow[key] for key in expected} == expected
    assert flow["unscored"] == {} and flow["threshold_split"] == "val"
    assert flow["threshold_unscored"] == {}
    assert flow["excluded"] and flow["files_in_export"] > flow["images"]  # the synth's junk


def test_the_flow_of_a_cross_validated_run_counts_each_fold(folded_run: Evaluated) -> None:
    flow = _json(folded_run.eval_dir / "evaluation.json")["flow"]
    _check_flow_adds_up(flow)
    expected = _independent_flow(
        folded_run.ingested.root, folded_run.run / "splits.csv", folded_run.predictions, "test"
    )
    assert {key: flow[key] for key in expected} == expected
    assert set(flow["by_split"]) == {"fold-1", "fold-2", "test"}
    assert flow["threshold_split"] == "oof"
    # the out-of-fold rows carry the manifest's demographics too
    manifest = {row["image_id"]: row for row in folded_run.ingested.rows}
    for row in _rows(folded_run.predictions):
        source = manifest[row["image_id"]]
        assert (row["sex"], row["age_band"], row["study_year"]) == (
            source["sex"],
            source["age_band"],
            source["study_year"],
        )


def test_predictions_carry_sex_age_band_and_study_year_from_the_manifest(
    evaluated_run: Evaluated,
) -> None:
    manifest = {row["image_id"]: row for row in evaluated_run.ingested.rows}
    rows = _rows(evaluated_run.predictions)
    for row in rows:
        for column in ("sex", "age_band", "study_year"):
            assert row[column] == manifest[row["image_id"]][column]
    assert {row["sex"] for row in rows} <= {"F", "M"} and all(row["age_band"] for row in rows)
    context = _json(evaluated_run.eval_dir / "evaluation.json")
    test_years = Counter(
        manifest[row["image_id"]]["study_year"] for row in rows if row["split"] == "test"
    )
    assert context["study_years"] == dict(test_years) == {"2024": sum(test_years.values())}
    test_rows = [manifest[row["image_id"]] for row in rows if row["split"] == "test"]
    assert context["data"]["sexes"] == dict(sorted(Counter(r["sex"] for r in test_rows).items()))
    bands = Counter(r["age_band"] for r in test_rows)
    assert context["data"]["age_bands"] == dict(sorted(bands.items()))


def test_the_deidentification_block_says_what_was_and_was_not_done(
    evaluated_run: Evaluated,
) -> None:
    block = _json(evaluated_run.eval_dir / "evaluation.json")["deidentification"]
    rows = evaluated_run.ingested.rows
    cropped = sum(1 for row in rows if row["crop"])
    assert block["region_crop"] == {
        "images": len(rows),
        "cropped": cropped,
        "without_region": len(rows) - cropped,
    }
    ingest = _json(evaluated_run.ingested.root / "ingest.json")
    assert block["region_crop"]["cropped"] == ingest["n_cropped"]
    assert block["uids_in_outputs"] is False
    assert "HMAC-SHA256" in block["pseudonyms"]
    assert block["secret_fingerprint"] == ingest["secret_fingerprint"]
    assert any("HMAC-SHA256" in s for s in block["done"])
    assert any("Sequence of Ultrasound Regions" in s for s in block["done"])
    assert any("no text recognition" in s for s in block["not_done"])
    assert any("source DICOM files were not changed" in s for s in block["not_done"])
    assert all(s.endswith(".") for s in [*block["done"], *block["not_done"]])


def test_the_deidentification_block_counts_images_without_a_region() -> None:
    rows = [
        {"image_id": "a", "crop": "0,0,9,9"},
        {"image_id": "b", "crop": ""},
        {"image_id": "c", "crop": ""},
    ]
    block = deidentification({}, rows)
    assert block["region_crop"] == {"images": 3, "cropped": 1, "without_region": 2}
    assert any(s.startswith("2 of 3 images had no ultrasound region") for s in block["not_done"])
    unknown = deidentification({}, [{"image_id": "a"}])
    assert unknown["region_crop"]["without_region"] is None


def test_unscorable_images_are_counted_by_reason_never_dropped(
    evaluated_run: Evaluated, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(evaluated_run.ingested.root, data, ignore=shutil.ignore_patterns(".usdcm"))
    rows = [row for row in _rows(data / "manifest.csv") if row["label"]]
    (data / rows[0]["image_path"]).unlink()
    (data / rows[1]["image_path"]).write_bytes(b"\x1f\x8b not an image")
    predictions, context = evaluate_run(
        evaluated_run.run,
        tmp_path / "out",
        manifest=data / "manifest.csv",
        device="cpu",
        reference_standard="expert consensus",
    )
    flow = context["flow"]
    _check_flow_adds_up(flow)
    expected = _independent_flow(data, None, predictions, "external")
    assert {key: flow[key] for key in expected} == expected
    assert flow["unscored"][MISSING_IMAGE] == 1
    (reason,) = set(flow["unscored"]) - {MISSING_IMAGE}
    assert reason.startswith("image could not be read or preprocessed (")
    assert flow["evaluated_images"] == len(rows) and flow["scored_images"] == len(rows) - 2
    scored = {row["image_id"] for row in _rows(predictions) if row["split"] == "external"}
    assert rows[0]["image_id"] not in scored and rows[1]["image_id"] not in scored
    assert context["reference_standard"] == "expert consensus"


def test_the_reference_standard_comes_from_the_config_unless_given(
    evaluated_run: Evaluated,
) -> None:
    context = _json(evaluated_run.eval_dir / "evaluation.json")
    assert context["reference_standard"] == ""  # the tiny config's default
