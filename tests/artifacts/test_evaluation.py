"""evaluation.json: EvaluationContext round trip, and another schema version is refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from usdcm.artifacts.evaluation import (
    SCHEMA_VERSION,
    EvaluationContext,
    EvaluationFileError,
    LeakageCheck,
    ManifestCheck,
)
from usdcm.errors import SchemaVersionError

CONTEXT = EvaluationContext(
    run_dir="runs/r",
    manifest="data/manifest.csv",
    split="test",
    default_level="study",
    leakage_check=LeakageCheck("failed", "1 patient ...", shared_patients=1),
    manifest_check=ManifestCheck.of("aa", "bb"),
    image_roots={"test": "data"},
    intended_use="demo",
    commands=("usdcm train x", "usdcm evaluate y"),
    data={"labels": {"a": 2}},
    split_counts={"test": 2, "val": 3},
    split_source="the run's splits.csv",
    model={"architecture": "resnet18"},
)


def test_round_trip_keeps_the_keys_the_report_reads(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    CONTEXT.write(path)
    loaded = json.loads(path.read_text())
    assert loaded["schema_version"] == SCHEMA_VERSION
    assert loaded["split_info"]["leakage_check"]["status"] == "failed"
    assert loaded["split_info"]["counts"] == {"test": 2, "val": 3}
    assert loaded["model"]["manifest_check"]["status"] == "changed"
    assert loaded["model"]["architecture"] == "resnet18"
    assert EvaluationContext.read(path) == CONTEXT


def test_another_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    payload = CONTEXT.to_dict()
    payload["schema_version"] = 1
    path.write_text(json.dumps(payload))
    with pytest.raises(SchemaVersionError) as caught:
        EvaluationContext.read(path)
    message = str(caught.value)
    assert str(path) in message and "schema version 1" in message
    assert f"reads version {SCHEMA_VERSION}" in message and "usdcm evaluate" in message
    del payload["schema_version"]  # an older usdcm's file, with leakage_check "passed"
    path.write_text(json.dumps(payload))
    with pytest.raises(SchemaVersionError, match="without a schema_version"):
        EvaluationContext.read(path)


def test_a_malformed_file_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    payload = CONTEXT.to_dict()
    payload["split_info"]["leakage_check"] = "passed"
    path.write_text(json.dumps(payload))
    with pytest.raises(EvaluationFileError, match=f"{path}.*malformed"):
        EvaluationContext.read(path)


def test_the_flow_deidentification_years_and_reference_standard_round_trip(
    tmp_path: Path,
) -> None:
    path = tmp_path / "evaluation.json"
    context = dataclasses.replace(
        CONTEXT,
        reference_standard="biopsy",
        flow={"images": 3, "labelled": 2, "unlabelled": 1, "unscored": {}},
        deidentification={"uids_in_outputs": False, "done": ["x."], "not_done": ["y."]},
        study_years={"2019": 2, "(unknown)": 1},
    )
    context.write(path)
    loaded = json.loads(path.read_text())
    assert loaded["reference_standard"] == "biopsy" and loaded["flow"]["images"] == 3
    assert loaded["study_years"] == {"2019": 2, "(unknown)": 1}
    assert EvaluationContext.read(path) == context


def test_a_file_without_the_new_keys_reads_them_empty(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    payload = CONTEXT.to_dict()
    for key in ("reference_standard", "flow", "deidentification", "study_years"):
        del payload[key]
    path.write_text(json.dumps(payload))
    loaded = EvaluationContext.read(path)
    assert (loaded.reference_standard, loaded.flow, loaded.deidentification) == ("", {}, {})
    assert loaded.study_years == {}
