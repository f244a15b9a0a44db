"""The whole job end to end, small: synth -> ingest -> train -> evaluate."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tests.report.conftest import markdown_section
from usdcm.artifacts.plan import PlanRecord
from usdcm.cli.app import app
from usdcm.config import config_from_dict, load_config
from usdcm.demo import DEMO_OVERRIDES, DEMO_TIME_BUDGET_S
from usdcm.runtime.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_configs_demo_yaml_holds_what_the_demo_sets_over_its_plan() -> None:
    path = ROOT / "configs" / "demo.yaml"
    nested = yaml.safe_load(path.read_text(encoding="utf-8"))
    flat = {
        f"{key}.{inner}" if isinstance(value, dict) else key: inner_value
        for key, value in nested.items()
        for inner, inner_value in (value.items() if isinstance(value, dict) else [(key, value)])
    }
    assert flat == DEMO_OVERRIDES
    assert load_config(path).optim.time_limit_s == 0
    assert load_config(path).intended_use == DEMO_OVERRIDES["intended_use"]


def test_demo_runs_the_whole_job_and_prints_the_report_path(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["demo", str(out), "--patients", "8", "--epochs", "2", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = out / "run" / "eval" / "report.html"
    assert f"Open the report: {report}" in result.output.replace("\n", "")
    assert report.stat().st_size > 20_000
    metrics = json.loads((out / "run" / "eval" / "metrics.json").read_text())
    assert metrics["level"] == "study" and metrics["threshold"]["chosen_on"] == "val"
    assert len((out / "run" / "metrics.jsonl").read_text().splitlines()) == 2

    # provenance: the commands the demo's steps stand for, not the test runner's argv
    run, manifest = out / "run", out / "data" / "manifest.csv"
    train = ["usdcm", "train", str(manifest), "--config", str(out / "demo.yaml"), "--out", str(run)]
    evaluate = ["usdcm", "evaluate", str(run), "--out", str(run / "eval")]
    context = json.loads((run / "eval" / "evaluation.json").read_text())
    assert context["commands"] == [shlex.join(train), shlex.join(evaluate)]
    assert metrics["provenance"]["command"] == shlex.join(evaluate)
    assert load_checkpoint(run / "best.pt")["command"] == shlex.join(train)
    markdown = (run / "eval" / "report.md").read_text(encoding="utf-8")
    assert shlex.join(train) in markdown and shlex.join(evaluate) in markdown
    # the report a clinician opens first: every value there is stated, none is "n/a"
    for title in ("Summary", "Data", "Results"):
        assert "n/a" not in markdown_section(markdown, title), title
    assert context["reference_standard"] == DEMO_OVERRIDES["reference_standard"]
    assert "No reference standard is stated" not in markdown
    # the demo trains the default plan; the config the recorded command names is the plan's
    plan = PlanRecord.read(run / "plan.json")
    assert load_config(out / "demo.yaml") == config_from_dict(plan.config)
    assert plan.time_budget_s == DEMO_TIME_BUDGET_S
    assert plan.choice("optim.epochs").value == 2 and plan.choice("optim.epochs").overridden
    assert not plan.choice("model.name").overridden
    assert plan.config["model"]["name"] != "seed_cnn"
    assert f"3/4 train: {plan.config['model']['name']}" in result.output
    assert plan.estimated_seconds <= DEMO_TIME_BUDGET_S

    again = CliRunner().invoke(app, args)  # the export is reused, ingest converts nothing
    assert again.exit_code == 0, again.output
    assert "reusing" in again.output
    other = CliRunner().invoke(app, ["demo", str(out), "--patients", "9", "-q"])
    assert other.exit_code == 2
    assert "pass another folder" in other.output

    # a demo elsewhere draws the same pseudonyms, hence the same split and the same numbers
    twin = tmp_path / "twin"
    result = CliRunner().invoke(app, ["demo", str(twin), "--patients", "8", "--epochs", "2", "-q"])
    assert result.exit_code == 0, result.output
    for name in ("data/manifest.csv", "run/splits.csv", "run/eval/predictions.csv"):
        assert (twin / name).read_bytes() == (out / name).read_bytes(), name
