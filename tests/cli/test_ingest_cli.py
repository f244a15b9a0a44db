from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from usdcm.cli.app import app
from usdcm.synth import ExportSummary

runner = CliRunner()


def test_ingest_prints_a_summary_and_no_identifier(
    synth_export: ExportSummary, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["ingest", str(synth_export.root), "--out", str(out), "--workers", "1", "-q"]
    result = runner.invoke(app, [*args, "--labels", str(synth_export.labels_path)])
    assert result.exit_code == 0, result.output
    assert "images in" in result.output and "excluded (" in result.output
    assert (out / "manifest.csv").is_file()
    for text in synth_export.phi:
        assert text not in result.output


def test_missing_source_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: SOURCE")
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_unreadable_labels_is_one_line_and_exit_2(
    synth_export: ExportSummary, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xff\xfe\x00bad")
    result = runner.invoke(
        app,
        ["ingest", str(synth_export.root), "--out", str(tmp_path / "o"), "--labels", str(labels)],
    )
    assert result.exit_code == 2
    assert "labels file" in result.output
    assert "Traceback" not in result.output


def test_compress_none_writes_plain_nifti_and_a_bad_choice_is_refused(
    synth_export: ExportSummary, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["ingest", str(synth_export.root), "--out", str(out), "--workers", "1", "-q"]
    result = runner.invoke(app, [*args, "--compress", "none"])
    assert result.exit_code == 0, result.output
    names = [path.name for path in (out / "images").iterdir()]
    assert names and all(name.endswith(".nii") for name in names)
    assert json.loads((out / "ingest.json").read_text())["options"]["compress"] == "none"
    refused = runner.invoke(app, [*args, "--compress", "zstd"])
    assert refused.exit_code == 2
    assert "zstd" in refused.output and "Traceback" not in refused.output
