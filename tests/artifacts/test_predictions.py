"""predictions.csv: versioned rows; another version is refused, a hand-written file is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from usdcm.artifacts.predictions import (
    SCHEMA_VERSION,
    Predictions,
    PredictionsError,
    write_predictions,
    write_source_predictions,
)
from usdcm.errors import SchemaVersionError

ROW = {"image_id": "i1", "split": "test", "label": "a", "prob_a": 0.25, "prob_b": 0.75}


def test_round_trip_carries_the_version(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    assert write_predictions(path, [ROW], ["a", "b"]) == 1
    read = Predictions.read(path)
    assert read.classes == ("a", "b")
    assert read.rows[0]["prob_a"] == "0.25000000"
    assert read.rows[0]["schema_version"] == str(SCHEMA_VERSION)
    assert read.rows[0]["study_key"] == ""


def test_another_version_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    write_predictions(path, [ROW], ["a", "b"])
    text = path.read_text(encoding="utf-8").replace(f",{SCHEMA_VERSION}\n", ",9\n")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SchemaVersionError) as caught:
        Predictions.read(path)
    message = str(caught.value)
    assert str(path) in message and "schema version 9" in message
    assert f"reads version {SCHEMA_VERSION}" in message and "usdcm evaluate" in message


def test_a_hand_written_file_without_a_version_is_read(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("image_id,label,prob_a,prob_b\ni1,a,0.9,0.1\n", encoding="utf-8")
    assert Predictions.read(path).classes == ("a", "b")
    with pytest.raises(PredictionsError, match="two classes or more"):
        Predictions(rows=(), classes=("a",))


def test_predicts_csv_carries_the_version_too(tmp_path: Path) -> None:
    path = tmp_path / "today.csv"
    row = {"image_id": "i1", "prob_a": 0.5, "prob_b": 0.5, "predicted": "a"}
    write_source_predictions(path, [row], [], ["a", "b"])
    header, line = path.read_text(encoding="utf-8").splitlines()
    assert header.endswith(",predicted,schema_version")
    assert line.endswith(f",a,{SCHEMA_VERSION}")


def test_predictions_carry_the_demographic_columns(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    row = {**ROW, "sex": "F", "age_band": "90+", "study_year": "2019"}
    write_predictions(path, [row], ["a", "b"])
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert ",sex,age_band,study_year,schema_version" in header
    (read,) = Predictions.read(path).rows
    assert (read["sex"], read["age_band"], read["study_year"]) == ("F", "90+", "2019")


def test_an_older_file_without_the_demographic_columns_reads_them_empty(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    path.write_text(
        "image_id,split,label,prob_a,prob_b,patient_key,study_key,series_key,manufacturer,"
        f"model,frames,schema_version\ni1,test,a,0.9,0.1,p,s,r,Acme,X,3,{SCHEMA_VERSION}\n",
        encoding="utf-8",
    )
    (read,) = Predictions.read(path).rows
    assert (read["sex"], read["age_band"], read["study_year"]) == ("", "", "")
