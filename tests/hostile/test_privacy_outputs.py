"""No fake patient identifier reaches any output, no burned-in text reaches any image, and no
DICOM UID of the export reaches an output meant to leave the secret's folder.

The whole job runs on a synthetic export (synth -> ingest -> train -> evaluate -> predict,
through the CLI). Then every output file (bytes, decompressed if gzipped), every file and
folder name, every non-tensor value of each checkpoint (via ``load_checkpoint``) and all
captured stdout/stderr are searched, case-insensitively, for every string in
``ExportSummary.phi`` and its DICOM and display variants (``FAMILY^GIVEN``, ``FAMILY GIVEN``,
``GIVEN FAMILY``, ``FAMILY, GIVEN``, dates with separators), and for every study date (only
its year may be written). Digit-only strings (dates) must not be glued to other digits, so
a probability such as ``0.1944070412`` is not taken for the birth date 19440704.

Burned-in text: the synth draws the banner (name, ID, birth date) in the top rows, outside
the tissue region. For each image the stored NIfTI must have exactly the shape of its
manifest ``crop``, the crop must be the tissue region the synth wrote, and the banner's
text pixels, rendered again with the synth's own ``draw_text``, must all lie outside it.

UIDs: every StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID of the export, read back
with pydicom, is searched for in every file and file name written by ``evaluate`` (on the
run's test split and on an external manifest), ``report`` and ``predict``, in the run's
``splits.csv`` and in what the commands print. Only the manifest, which lives beside the
secret, may hold UIDs.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tests.evaluation.conftest import Evaluated, evaluated_run
from tests.training.conftest import tiny_config
from usdcm.artifacts.manifest import read_manifest
from usdcm.cli.app import app
from usdcm.runtime.checkpoint import load_checkpoint
from usdcm.synth import write_export
from usdcm.synth.plan import draw_plan
from usdcm.synth.screen import GAP, draw_text

PATIENTS, SEED = 6, 0
runner = CliRunner()
__all__ = ["evaluated_run"]  # the shared trained run, as a fixture of this module


def variants(phi: frozenset[str]) -> set[str]:
    """Every identifier, as written and in the other ways a name or date gets written."""
    found: set[str] = set()
    for value in phi:
        found.add(value)
        if "^" in value:
            parts = [part for part in value.split("^") if part]
            found |= {" ".join(parts), ", ".join(parts), "_".join(parts)}
            found |= {" ".join(reversed(parts)), "^".join(reversed(parts))}
        if re.fullmatch(r"\d{8}", value):
            y, m, d = value[:4], value[4:6], value[6:]
            found |= {f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}.{m}.{d}", f"{d}/{m}/{y}"}
            found |= {f"{m}/{d}/{y}"}
    return {value for value in found if len(value.strip()) >= 3}


def phi_pattern(phi: frozenset[str]) -> re.Pattern[str]:
    words = []
    for value in sorted(variants(phi), key=len, reverse=True):
        escaped = re.escape(value)
        words.append(rf"(?<![\d.]){escaped}(?!\d)" if value[0].isdigit() else escaped)
    return re.compile("|".join(words), re.IGNORECASE)


def non_tensor_values(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every key and non-tensor leaf of a checkpoint, as text, with where it is."""
    if isinstance(value, torch.Tensor):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{where}/key", str(key)
            yield from non_tensor_values(item, f"{where}/{key}")
    elif isinstance(value, list | tuple | set):
        for index, item in enumerate(value):
            yield from non_tensor_values(item, f"{where}[{index}]")
    else:
        yield where, str(value)


def file_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("latin-1")


@pytest.mark.slow
def test_no_identifier_in_any_output_and_no_banner_in_any_image(tmp_path: Path) -> None:
    export = tmp_path / "export"
    data, run, evaluation = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    predictions = tmp_path / "pred" / "predictions.csv"
    config = tmp_path / "tiny.yaml"
    settings = tiny_config(data={"image_size": [32, 32], "eval_frames": 2}, optim={"epochs": 2})
    config.write_text(yaml.safe_dump(settings.to_dict()), encoding="utf-8")

    summary = write_export(export, patients=PATIENTS, seed=SEED)
    assert summary.phi
    commands = [
        ["ingest", str(export), "--out", str(data), "--labels", str(summary.labels_path)],
        ["train", str(data / "manifest.csv"), "--config", str(config), "--out", str(run)],
        ["evaluate", str(run), "--out", str(evaluation), "--bootstrap", "50"],
        ["predict", str(run), str(export), "--out", str(predictions)],
    ]
    captured = []
    for command in commands:
        args = [*command, "--workers", "1"] if command[0] == "ingest" else command
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (command[0], result.output, result.exception)
        captured.append((f"output of usdcm {command[0]}", result.output))

    plan = draw_plan(patients=PATIENTS, seed=SEED, abnormal_fraction=0.5, difficulty=0.3, frames=8)
    study_dates = {patient.study_date.strftime("%Y%m%d") for patient in plan.patients}
    pattern = phi_pattern(summary.phi | study_dates)  # years only: never a full date
    leaks: list[str] = []

    def scan(where: str, text: str) -> None:
        leaks.extend(f"{where}: {match.group(0)!r}" for match in pattern.finditer(text))

    for where, text in captured:
        scan(where, text)
    outputs = [data, run, evaluation, predictions.parent]
    n_files = 0
    for folder in outputs:
        for path in sorted(folder.rglob("*")):
            scan(f"name {path.relative_to(tmp_path)}", path.relative_to(tmp_path).as_posix())
            if path.is_file():
                n_files += 1
                scan(str(path.relative_to(tmp_path)), file_text(path))
            if path.suffix == ".pt":
                for where, text in non_tensor_values(load_checkpoint(path)):
                    scan(f"{path.name}{where}", text)
    assert not leaks, "identifiers in outputs:\n" + "\n".join(leaks[:50])
    expected = {"manifest.csv", "excluded.csv", "ingest.json", "journal.jsonl", "train.log"}
    expected |= {"config.yaml", "splits.csv", "metrics.jsonl", "best.pt", "last.pt"}
    expected |= {"predictions.csv", "evaluation.json", "report.html", "report.md"}
    names = {path.name for folder in outputs for path in folder.rglob("*")}
    assert expected <= names, expected - names  # the scan saw every kind of output
    assert n_files > len(summary.image_paths)

    # the scan does find an identifier where there is one
    scan("self-check", f"x {sorted(summary.phi)[0].lower()} y")
    assert leaks

    check_no_burned_text(data, summary)


def check_no_burned_text(data: Path, summary: Any) -> None:
    plan = draw_plan(patients=PATIENTS, seed=SEED, abnormal_fraction=0.5, difficulty=0.3, frames=8)
    screens = {
        str(instance.sop_instance_uid): (patient, instance)
        for patient, _series, instance in plan.instances
    }
    records = {record.sop_instance_uid: record for record in summary.images}
    rows = read_manifest(data / "manifest.csv")
    assert len(rows) == len(summary.image_paths)
    for row in rows:
        record = records[row["sop_uid"]]
        x0, y0, x1, y1 = (int(v) for v in row["crop"].split(","))
        assert (x0, y0, x1, y1) == record.tissue_box  # the synth's tissue region, clipped
        volume = np.asanyarray(nib.load(data / row["image_path"]).dataobj)
        assert volume.shape[:2] == (x1 - x0 + 1, y1 - y0 + 1), row["image_id"]  # (width, height)
        assert volume.shape[2] == int(row["frames"]) == record.frames

        patient, instance = screens[row["sop_uid"]]
        layout = instance.layout
        text = draw_text(patient.banner, rows=layout.rows, columns=layout.columns, origin=(GAP, 2))
        burned = text.any(axis=-1)
        assert burned.sum() > 50, "the banner should be drawn somewhere"
        assert not burned[y0 : y1 + 1, x0 : x1 + 1].any(), "banner text inside the stored crop"


def export_uids(root: Path) -> set[str]:
    """Every study, series and SOP instance UID of the DICOM files under ``root``."""
    uids: set[str] = set()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # junk files of the export: not DICOM, nothing to collect
            continue
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            value = str(dataset.get(keyword, "") or "").strip()
            if value:
                uids.add(value)
    return uids


def test_no_dicom_uid_in_any_evaluate_report_or_predict_output(
    evaluated_run: Evaluated, tmp_path: Path
) -> None:
    ingested = evaluated_run.ingested
    uids = export_uids(ingested.export.root)
    manifest_uids = {
        row[c] for row in ingested.rows for c in ("study_uid", "series_uid", "sop_uid")
    }
    assert manifest_uids <= uids  # pydicom found every UID the ingest kept, and more
    assert len(uids) > len(ingested.rows)

    run = evaluated_run.run
    evaluation, external = tmp_path / "eval", tmp_path / "external"
    audit, predictions = tmp_path / "audit", tmp_path / "pred" / "today.csv"
    commands = [
        ["evaluate", str(run), "--out", str(evaluation), "--bootstrap", "20", "-q"],
        ["evaluate", str(run), "--out", str(external), "--bootstrap", "20", "-q"]
        + ["--manifest", str(ingested.root / "manifest.csv"), "--level", "study"],
        ["report", str(evaluation / "predictions.csv"), "--out", str(audit), "--bootstrap", "20"]
        + ["--level", "series"],
        ["predict", str(run), str(ingested.export.root), "--out", str(predictions), "-q"],
    ]
    printed: dict[str, str] = {}
    for index, command in enumerate(commands):
        args = command if command[0] == "report" else [*command, "--device", "cpu"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (command[0], result.output, result.exception)
        printed[f"output of usdcm {command[0]} #{index}"] = result.output

    outputs = [evaluation, external, audit, predictions.parent, evaluated_run.eval_dir]
    files = [path for folder in outputs for path in sorted(folder.rglob("*")) if path.is_file()]
    files.append(run / "splits.csv")
    names = {path.name for path in files}
    expected = {"predictions.csv", "evaluation.json", "metrics.json", "report.html", "report.md"}
    expected |= {"splits.csv", "today.csv", "today.excluded.csv"}
    assert expected <= names, expected - names
    texts = {str(path): file_text(path) for path in files}
    texts |= {f"name of {path}": path.as_posix() for path in files}
    texts |= printed
    leaks = sorted(
        f"{where}: {uid}" for where, text in texts.items() for uid in uids if uid in text
    )
    assert not leaks, "UIDs in shared outputs:\n" + "\n".join(leaks[:30])

    # the keys that replace them are there, and the scan does find a UID where there is one
    with (evaluation / "predictions.csv").open(encoding="utf-8") as handle:
        header = handle.readline()
    assert "study_key" in header and "series_key" in header
    manifest_text = (ingested.root / "manifest.csv").read_text(encoding="utf-8")
    assert sum(uid in manifest_text for uid in uids) >= len(manifest_uids)
