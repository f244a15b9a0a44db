"""plan.json: round trip, schema version, malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from usdcm.artifacts.plan import PLAN_JSON, SCHEMA_VERSION, Choice, PlanRecord
from usdcm.errors import PlanFileError, SchemaVersionError


def record() -> PlanRecord:
    return PlanRecord(
        choices=(
            Choice("model.name", "efficientnet_lite0", "pretrained"),
            Choice("data.image_size", [96, 96], "fits the budget"),
            Choice("optim.epochs", 3, "set by --epochs (the plan chose 40: ...)", True),
        ),
        config={"model": {"name": "efficientnet_lite0"}, "optim": {"epochs": 3}},
        fingerprint={"data": {"images": 10}, "device": {"kind": "cpu"}},
        time_budget_s=600.0,
        estimated_seconds=123.4,
        notes=("a note",),
        manifest="data/manifest.csv",
        usdcm_version="0.1.0",
    )


def test_plan_json_round_trips(tmp_path: Path) -> None:
    path = tmp_path / PLAN_JSON
    record().write(path)
    assert PlanRecord.read(path) == record()
    loaded = json.loads(path.read_text())
    assert loaded["schema_version"] == SCHEMA_VERSION
    assert loaded["choices"][2] == {
        "key": "optim.epochs",
        "value": 3,
        "rule": "set by --epochs (the plan chose 40: ...)",
        "overridden": True,
    }
    assert record().overridden == (record().choices[2],)
    assert record().choice("data.image_size").value == [96, 96]
    with pytest.raises(KeyError):
        record().choice("optim.lr")


def test_another_schema_version_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / PLAN_JSON
    values = record().to_dict()
    values["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(values))
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        PlanRecord.read(path)
    del values["schema_version"]
    path.write_text(json.dumps(values))
    with pytest.raises(SchemaVersionError, match="without a schema_version"):
        PlanRecord.read(path)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        json.dumps({"schema_version": SCHEMA_VERSION, "choices": []}),
        json.dumps({"schema_version": SCHEMA_VERSION, "choices": [{"key": "a"}], "config": {}}),
        json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "choices": [{"key": "a", "value": 1, "overridden": "yes"}],
                "config": {},
            }
        ),
    ],
)
def test_a_malformed_plan_is_one_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / PLAN_JSON
    path.write_text(text)
    with pytest.raises(PlanFileError, match=str(path)):
        PlanRecord.read(path)


def test_a_missing_plan_and_a_key_chosen_twice_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PlanFileError, match="No plan at"):
        PlanRecord.read(tmp_path / PLAN_JSON)
    with pytest.raises(PlanFileError, match="twice"):
        PlanRecord(choices=(Choice("a.b", 1, ""), Choice("a.b", 2, "")), config={})
