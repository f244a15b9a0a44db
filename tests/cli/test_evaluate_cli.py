from __future__ import annotations

import csv
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import pytest
import torch
from tests.evaluation.conftest import Evaluated
from tests.training.conftest import tiny_config, write_tiny_manifest
from typer.testing import CliRunner

from usdcm.cli.app import app
from usdcm.training.run import train

runner = CliRunner()


def test_evaluate_prints_the_table_and_the_report_path(
    evaluated_run: Evaluated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", str(evaluated_run.run), "--out", str(out), "--bootstrap", "100", "-q"]
    args += ["--device", "cpu", "--level", "image"]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/usdcm", *args])  # as the shell would run it
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    command = shlex.join(["usdcm", *args])
    context = json.loads((out / "evaluation.json").read_text())
    assert context["commands"] == [command]  # the run was trained through the library
    assert json.loads((out / "metrics.json").read_text())["provenance"]["command"] == command
    assert "AUC (patient-clustered" in result.output  # the primary interval at image level
    assert f"report: {out / 'report.html'}" in result.output.replace("\n", "")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["level"] == "image"
    assert metrics["bootstrap"]["resamples"] == 100
    for phi in evaluated_run.ingested.export.phi:
        assert phi not in result.output
        for path in out.rglob("*"):
            if path.is_file() and path.suffix in (".csv", ".json", ".md", ".html"):
                assert phi not in path.read_text(encoding="utf-8"), path


def test_report_recomputes_from_predictions(
    evaluated_run: Evaluated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "audit"
    args = ["report", str(evaluated_run.predictions), "--out", str(out), "--bootstrap", "50"]
    extra = [
        "--threshold",
        "sens:0.9",
        "--subgroup",
        "manufacturer",
        "--intended-use",
        "Triage <x>",
    ]
    monkeypatch.setattr(sys, "argv", ["usdcm", *args, *extra])
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Triage &lt;x&gt;" in html
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"]["command"] == shlex.join(["usdcm", *args, *extra])
    assert shlex.join(["usdcm", *args, *extra]) in (out / "report.md").read_text(encoding="utf-8")
    assert metrics["threshold"]["rule"] == "sens:0.9"
    assert metrics["threshold"]["chosen_on"] == "val"
    assert list(metrics["subgroups"]) == ["manufacturer"]
    assert (out / "report.html").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--threshold", "sens:2"], "sens"),
        (["--positive-class", "nope"], "nope"),
        (["--split", "train"], "train"),
    ],
)
def test_report_errors_are_one_line(
    evaluated_run: Evaluated, tmp_path: Path, extra: list[str], expected: str
) -> None:
    args = ["report", str(evaluated_run.predictions), "--out", str(tmp_path), *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert expected in result.output
    assert "Traceback" not in result.output


def test_evaluate_without_a_run_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "No checkpoint" in result.output


def test_predict_writes_rows_and_exclusions(evaluated_run: Evaluated, tmp_path: Path) -> None:
    export = evaluated_run.ingested.export
    out = tmp_path / "preds.csv"
    args = ["predict", str(evaluated_run.run), str(export.root), "--out", str(out), "-q"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with (tmp_path / "preds.excluded.csv").open(encoding="utf-8") as handle:
        excluded = list(csv.DictReader(handle))
    n_files = sum(1 for p in export.root.rglob("*") if p.is_file())
    assert len(rows) + len(excluded) == n_files
    assert {r["predicted"] for r in rows} <= {"abnormal", "normal"}
    text = out.read_text() + (tmp_path / "preds.excluded.csv").read_text() + result.output
    for phi in export.phi:
        assert phi not in text
    for row in evaluated_run.ingested.rows:  # keyed by pseudonyms only, never by UIDs
        for uid in (row["sop_uid"], row["study_uid"], row["series_uid"]):
            assert uid not in text
    assert {r["image_id"] for r in rows} == {r["image_id"] for r in evaluated_run.ingested.rows}


def test_predict_on_a_missing_source_is_one_line(evaluated_run: Evaluated, tmp_path: Path) -> None:
    args = ["predict", str(evaluated_run.run), str(tmp_path / "nope"), "--out", "p.csv"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "does not exist" in result.output


class _Payload:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_crafted_checkpoint_is_refused_by_the_cli(
    command: str, evaluated_run: Evaluated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model_state": _Payload(), "config": {}}, run / "best.pt")
    if command == "evaluate":
        args = ["evaluate", str(run), "--out", str(tmp_path / "eval")]
    else:
        export = evaluated_run.ingested.export.root
        args = ["predict", str(run), str(export), "--out", str(tmp_path / "p.csv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "nothing in it was executed" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "PWNED").exists()


def test_evaluate_refuses_a_changed_manifest_in_one_line(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data", side=24)
    trained_sha = hashlib.sha256(manifest.read_bytes()).hexdigest()
    train(manifest, tiny_config(optim={"epochs": 1}), tmp_path / "run")
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace(",abnormal,", ",normal,", 1), encoding="utf-8")
    actual = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert actual != trained_sha

    args = ["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "eval"), "-q"]
    args += ["--device", "cpu", "--bootstrap", "20"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert refused.output.startswith("error: ")
    assert len(refused.output.strip().splitlines()) == 1
    assert trained_sha in refused.output and actual in refused.output
    assert "--allow-changed-manifest" in refused.output
    assert "Traceback" not in refused.output
    assert not (tmp_path / "eval").exists()

    allowed = runner.invoke(app, [*args, "--allow-changed-manifest"])
    assert allowed.exit_code == 0, allowed.output
    context = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert context["model"]["manifest_check"]["status"] == "changed"
    assert context["model"]["manifest_check"]["actual_sha256"] == actual


def test_evaluate_records_the_reference_standard_and_says_what_it_could_not_score(
    evaluated_run: Evaluated, tmp_path: Path
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(evaluated_run.ingested.root, data, ignore=shutil.ignore_patterns(".usdcm"))
    with (data / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        first = next(row for row in csv.DictReader(handle) if row["label"])
    (data / first["image_path"]).unlink()
    out = tmp_path / "eval"
    args = ["evaluate", str(evaluated_run.run), "--out", str(out), "--bootstrap", "20", "-q"]
    args += ["--device", "cpu", "--manifest", str(data / "manifest.csv")]
    args += ["--reference-standard", "Biopsy histopathology, one pathologist"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    context = json.loads((out / "evaluation.json").read_text())
    assert context["reference_standard"] == "Biopsy histopathology, one pathologist"
    assert context["flow"]["unscored"] == {"image file missing (re-run `usdcm ingest`)": 1}
    assert "1 of " in result.output and "could not be scored" in result.output
