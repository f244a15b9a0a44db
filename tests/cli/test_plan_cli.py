"""``usdcm plan``: the table, the JSON, overrides marked, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.plan.conftest import fake_probe
from tests.training.conftest import write_tiny_manifest
from typer.testing import CliRunner

from usdcm.artifacts.plan import SCHEMA_VERSION
from usdcm.cli.app import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def fake_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    from usdcm.plan import planner

    monkeypatch.setattr(planner, "timing_probe", lambda device: fake_probe)


def test_plan_prints_every_choice_with_its_rule_and_exits_0(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    result = runner.invoke(app, ["plan", str(manifest), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "28 images of 28 patients (abnormal 14, normal 14)" in text
    for key in ("model.name", "model.weights", "data.image_size", "optim.epochs", "rule"):
        assert key in text
    assert "estimated training time" in text and "20.0 min budget" in text
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
    assert "pat0" not in text


def test_plan_json_is_the_plan_file_and_marks_overrides(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    args = ["plan", str(manifest), "--json", "--epochs", "3", "--time-budget", "5m"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["schema_version"] == SCHEMA_VERSION
    assert plan["time_budget_s"] == 300.0
    rows = {row["key"]: row for row in plan["choices"]}
    assert rows["optim.epochs"]["value"] == 3 and rows["optim.epochs"]["overridden"]
    assert rows["optim.epochs"]["rule"].startswith("set by --epochs")
    assert rows["runtime.device"]["overridden"]  # --device cpu
    assert not rows["model.name"]["overridden"]
    assert plan["config"]["optim"]["epochs"] == 3


def test_a_config_file_overrides_the_plan_in_the_table(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    config = tmp_path / "mine.yaml"
    config.write_text("model:\n  name: seed_cnn\n")
    result = runner.invoke(app, ["plan", str(manifest), "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["key"]: row for row in json.loads(result.output)["choices"]}
    assert rows["model.name"]["value"] == "seed_cnn" and rows["model.name"]["overridden"]
    assert rows["model.weights"]["value"] == "none"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--time-budget", "20"], "write it with a unit"),
        (["--config", "missing.yaml"], "No config file at missing.yaml"),
        (["--epochs", "2", "--config", "bad.yaml"], "Unknown config key optim.epoch;"),
    ],
)
def test_a_bad_input_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], expected: str
) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text("optim:\n  epoch: 3\n")
    for args in ([str(manifest), *extra], [str(tmp_path / "nope.csv")]):
        result = runner.invoke(app, ["plan", *args])
        assert result.exit_code == 2
        assert (expected if args[0] == str(manifest) else "No manifest at") in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert "Traceback" not in result.output


def test_a_manifest_without_labels_is_one_line(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image_id,image_path,patient_key,label\na,a.nii.gz,p,\n")
    result = runner.invoke(app, ["plan", str(manifest)])
    assert result.exit_code == 2
    assert "none has a label" in result.output


def test_usdcm_help_lists_plan_and_stays_light() -> None:
    import subprocess
    import sys

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "plan" in result.output
    code = "import sys, usdcm.cli.app; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False"
