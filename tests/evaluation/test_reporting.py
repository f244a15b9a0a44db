"""``build_report``'s metrics: recalibration fitted on the val (or oof) rows only, the new
blocks of ``metrics.json``, and the default subgroups. The rendering is stubbed out: these
tests are about the numbers (tests/report checks the pages)."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from usdcm.evaluation import reporting
from usdcm.evaluation.reporting import SUBGROUP_COLUMNS, ReportOptions, build_report
from usdcm.metrics.aggregate import DEFAULT_SUBGROUP_COLUMNS

CLASSES = ("abnormal", "normal")


def make_rows(split: str, n_patients: int, seed: int, shift: float = 0.0) -> list[dict[str, str]]:
    """Patients with 1-3 images; an overconfident score, so that recalibration matters."""
    rng = random.Random(seed)
    rows = []
    for p in range(n_patients):
        label = CLASSES[p % 2]
        effect = rng.gauss(0, 1.0)
        for i in range(rng.randint(1, 3)):
            logit = 3 * ((1.0 if label == "abnormal" else -1.0) + effect + rng.gauss(0, 1)) + shift
            prob = 1 / (1 + math.exp(-logit))
            rows.append(
                {
                    "image_id": f"{split}-{p}-{i}",
                    "split": split,
                    "label": label,
                    "prob_abnormal": f"{prob:.8f}",
                    "prob_normal": f"{1 - prob:.8f}",
                    "patient_key": f"{split}-pat-{p}",
                    "study_key": f"{split}-study-{p}",
                    "series_key": f"{split}-series-{p}-{i % 2}",
                    "manufacturer": ("GE", "Philips")[p % 3 == 0],
                    "model": "M1",
                    "frames": "1",
                    "sex": ("F", "M", "")[p % 3],
                    "age_band": ("40-49", "50-59", "90+", "")[p % 4],
                }
            )
    return rows


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(autouse=True)
def no_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reporting, "_render", lambda *args, **kwargs: {})


def report(tmp_path: Path, rows: list[dict[str, str]], **options: Any) -> dict[str, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    predictions = write(tmp_path / "predictions.csv", rows)
    settings = {"n_bootstrap": 50, **options}
    built = build_report(predictions, tmp_path / "out", ReportOptions(**settings))
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["recalibration"] == built.metrics["recalibration"]
    return built.metrics


VAL = make_rows("val", 40, 1)
TEST = make_rows("test", 40, 2)
TRAIN = make_rows("train", 30, 3)


def test_recalibration_is_fitted_on_the_val_rows(tmp_path: Path) -> None:
    metrics = report(tmp_path, [*TRAIN, *VAL, *TEST])
    block = metrics["recalibration"]
    assert block["fitted_on"] == "val"
    assert block["n_fit"] == len(VAL)  # val images: without evaluation.json the level is image
    assert block["uncalibrated"] == {"brier": metrics["brier"], "ece": metrics["ece"]["value"]}
    assert block["logistic"]["slope"] < 1  # an overconfident score is flattened
    assert metrics["threshold"]["chosen_on"] == "val"
    assert "observed scores" in metrics["threshold"]["convention"]
    for key in ("sample_size", "decision_curve"):
        assert metrics[key]


def test_moving_the_test_rows_leaves_the_recalibration_fit_alone(tmp_path: Path) -> None:
    base = report(tmp_path / "a", [*TRAIN, *VAL, *TEST])["recalibration"]
    moved_test = [
        {**row, "prob_abnormal": row["prob_normal"], "prob_normal": row["prob_abnormal"]}
        for row in make_rows("test", 25, 9)
    ]
    moved = report(tmp_path / "b", [*TRAIN, *VAL, *moved_test])["recalibration"]
    assert moved["logistic"]["intercept"] == base["logistic"]["intercept"]
    assert moved["logistic"]["slope"] == base["logistic"]["slope"]
    assert moved["n_fit"] == base["n_fit"]
    assert moved["uncalibrated"] != base["uncalibrated"]
    # the train rows take no part either
    no_train = report(tmp_path / "c", [*VAL, *TEST])["recalibration"]
    assert no_train == base
    # other val rows: another fit
    other_val = report(tmp_path / "d", [*TRAIN, *make_rows("val", 40, 5, shift=1.0), *TEST])
    assert other_val["recalibration"]["logistic"]["intercept"] != base["logistic"]["intercept"]


def test_out_of_fold_rows_stand_for_val(tmp_path: Path) -> None:
    oof = [{**row, "split": "oof"} for row in VAL]
    metrics = report(tmp_path, [*oof, *TEST])
    assert metrics["recalibration"]["fitted_on"] == "out-of-fold predictions (oof)"
    assert metrics["threshold"]["chosen_on"] == "out-of-fold predictions (oof)"


def test_no_recalibration_without_held_out_rows_or_on_them(tmp_path: Path) -> None:
    assert report(tmp_path / "a", [*TRAIN, *TEST])["recalibration"] is None
    # evaluating the val rows themselves: nothing is left to fit on
    assert report(tmp_path / "b", [*VAL, *TEST], split="val")["recalibration"] is None


def test_auc_interval_method_follows_the_level(tmp_path: Path) -> None:
    from usdcm.artifacts.metrics import Level

    image = report(tmp_path / "a", [*VAL, *TEST], level=Level.IMAGE)["auc"]
    assert image["method"] == "patient-clustered bootstrap"
    assert image["ci95"] == image["bootstrap_ci95"]
    study = report(tmp_path / "b", [*VAL, *TEST], level=Level.STUDY)["auc"]
    assert study["method"] == "delong"
    assert study["ci95"] == study["delong_ci95"]


def test_default_subgroups_include_sex_and_age_band(tmp_path: Path) -> None:
    assert SUBGROUP_COLUMNS == DEFAULT_SUBGROUP_COLUMNS
    assert ReportOptions().subgroups == DEFAULT_SUBGROUP_COLUMNS
    metrics = report(tmp_path, [*VAL, *TEST])
    sexes = {entry["group"] for entry in metrics["subgroups"]["sex"]}
    assert sexes == {"F", "M", "unknown"}
    bands = {entry["group"] for entry in metrics["subgroups"]["age_band"]}
    assert bands == {"40-49", "50-59", "90+", "unknown"}


def test_an_older_predictions_file_without_demographics_still_reports(tmp_path: Path) -> None:
    old = [{k: v for k, v in row.items() if k not in ("sex", "age_band")} for row in [*VAL, *TEST]]
    metrics = report(tmp_path, old)
    (sex,) = metrics["subgroups"]["sex"]
    assert (sex["group"], sex["n"]) == ("unknown", metrics["n"])


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_failure_thumbnails_read_either_compression(tmp_path: Path, suffix: str) -> None:
    """``ingest --compress none`` writes ``.nii``: its failure cases still get thumbnails."""
    import nibabel as nib
    import numpy as np

    from usdcm.evaluation.reporting import _failure_thumbnails

    (tmp_path / "images").mkdir()
    volume = np.random.default_rng(0).integers(0, 255, (32, 24, 1), dtype=np.uint8)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "images" / f"img1{suffix}")
    metrics = {"failures": {"false_positives": [{"id": "case1", "image_ids": ["img1"]}]}}
    context = {"image_roots": {"test": str(tmp_path)}}
    thumbnails = _failure_thumbnails(metrics, context, "test")
    assert thumbnails["case1"].startswith(b"\x89PNG")
