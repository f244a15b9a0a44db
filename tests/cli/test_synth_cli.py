"""Tests for ``usdcm synth``: what a user sees, and what lands on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from usdcm.cli.app import app
from usdcm.synth import write_export

runner = CliRunner()


def test_synth_writes_the_export_and_prints_counts_without_phi(tmp_path: Path) -> None:
    out = tmp_path / "export"
    args = ["synth", str(out), "--patients", "2", "--seed", "5", "--frames", "4"]
    result = runner.invoke(app, [*args, "--abnormal-fraction", "1", "--difficulty", "0.1"])
    assert result.exit_code == 0, result.output
    reference = write_export(
        tmp_path / "reference", patients=2, seed=5, frames=4, abnormal_fraction=1, difficulty=0.1
    )
    assert result.output.count("\n") == 1
    assert "wrote 2 patients, 2 studies (2 abnormal)" in result.output
    assert f"{len(reference.image_paths)} ultrasound images" in result.output
    assert f"({reference.n_files} files)" in result.output
    for text in reference.phi:
        assert text not in result.output
    assert (out / "labels.csv").read_bytes() == reference.labels_path.read_bytes()
    assert (out / "DICOMDIR").read_bytes() == (reference.root / "DICOMDIR").read_bytes()


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--patients", "0", "--patients must be between 1 and 100000, found 0"),
        ("--abnormal-fraction", "1.5", "--abnormal-fraction must be between 0 and 1"),
        ("--difficulty", "2", "--difficulty must be between 0"),
        ("--frames", "1", "--frames (cine length) must be between 2 and 64, found 1"),
    ],
)
def test_synth_rejects_bad_values_in_one_line(
    tmp_path: Path, option: str, value: str, needle: str
) -> None:
    out = tmp_path / "export"
    result = runner.invoke(app, ["synth", str(out), option, value])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and needle in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_synth_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["synth", str(tmp_path), "--patients", "1"])
    assert result.exit_code == 2
    assert "is not empty" in result.output
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_synth_help_lists_its_options() -> None:
    result = runner.invoke(app, ["synth", "--help"])
    assert result.exit_code == 0
    for option in ("--patients", "--seed", "--abnormal-fraction", "--difficulty", "--frames"):
        assert option in result.output
