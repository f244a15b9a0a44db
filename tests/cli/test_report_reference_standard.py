"""``usdcm report --reference-standard``: the text reaches the report; without it, a limitation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from tests.report.conftest import CLASSES, prediction_rows
from typer.testing import CliRunner

from usdcm.artifacts.predictions import write_predictions
from usdcm.cli.app import app
from usdcm.evaluation.reporting import ReportOptions

runner = CliRunner()

pytestmark = pytest.mark.skipif(
    "reference_standard" not in {field.name for field in dataclasses.fields(ReportOptions)},
    reason="ReportOptions has no reference_standard yet (evaluation/reporting.py)",
)

REFERENCE = "Histopathology after surgery, read by two gynaecological pathologists."


@pytest.fixture(scope="module")
def predictions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report tests' generated study rows as a predictions.csv, no evaluation.json."""
    path = tmp_path_factory.mktemp("predictions") / "predictions.csv"
    rows = [
        {
            **row,
            "prob_abnormal": float(row["prob_abnormal"]),
            "prob_normal": float(row["prob_normal"]),
        }
        for row in prediction_rows()
    ]
    write_predictions(path, rows, CLASSES)
    return path


def _report(predictions: Path, out: Path, *extra: str) -> str:
    args = ["report", str(predictions), "--out", str(out), "--bootstrap", "20", "--level", "study"]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    return (out / "report.md").read_text(encoding="utf-8")


def test_reference_standard_reaches_the_report(predictions: Path, tmp_path: Path) -> None:
    markdown = _report(predictions, tmp_path / "with", "--reference-standard", REFERENCE)
    section = markdown.split("\n## Reference standard\n", 1)[1].split("\n## ", 1)[0]
    assert REFERENCE in section
    html = (tmp_path / "with" / "report.html").read_text(encoding="utf-8")
    assert REFERENCE in html and "[reference_standard_missing]" not in html


def test_without_a_reference_standard_the_report_says_so(predictions: Path, tmp_path: Path) -> None:
    markdown = _report(predictions, tmp_path / "without")
    section = markdown.split("\n## Reference standard\n", 1)[1].split("\n## ", 1)[0]
    assert "Not stated" in section
    html = (tmp_path / "without" / "report.html").read_text(encoding="utf-8")
    assert "[reference_standard_missing]" in html
