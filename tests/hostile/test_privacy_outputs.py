"""No fake patient identifier reaches any output, and no burned-in text reaches any image.

The whole job runs on a synthetic export (synth -> ingest -> train -> evaluate -> predict,
through the CLI). Then every output file (bytes, decompressed if gzipped), every file and
folder name, every non-tensor value of each checkpoint (via ``load_checkpoint``) and all
captured stdout/stderr are searched, case-insensitively, for every string in
``ExportSummary.phi`` and its DICOM and display variants (``FAMILY^GIVEN``, ``FAMILY GIVEN``,
``GIVEN FAMILY``, ``FAMILY, GIVEN``, dates with separators). Digit-only strings (birth
dates) must not be glued to other digits, so a probability such as ``0.1944070412`` is not
taken for the birth date 19440704.

Burned-in text: the synth draws the banner (name, ID, birth date) in the top rows, outside
the tissue region. For each image the stored NIfTI must have exactly the shape of its
manifest ``crop``, the crop must be the tissue region the synth wrote, and the banner's
text pixels, rendered again with the synth's own ``draw_text``, must all lie outside it.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tests.training.conftest import tiny_config
from usdcm.cli.app import app
from usdcm.manifest import read_manifest
from usdcm.synth import write_export
from usdcm.synth.plan import draw_plan
from usdcm.synth.screen import GAP, draw_text
from usdcm.training.checkpoint import load_checkpoint

PATIENTS, SEED = 6, 0
runner = CliRunner()


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

    pattern = phi_pattern(summary.phi)
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
        tissue = record.regions[0]  # the synth's tissue region
        assert (x0, y0, x1, y1) == (tissue.x0, tissue.y0, tissue.x1, tissue.y1)
        volume = np.asanyarray(nib.load(data / row["image_path"]).dataobj)
        assert volume.shape[:2] == (x1 - x0 + 1, y1 - y0 + 1), row["image_id"]  # (width, height)
        assert volume.shape[2] == int(row["frames"]) == record.frames

        patient, instance = screens[row["sop_uid"]]
        layout = instance.layout
        text = draw_text(patient.banner, rows=layout.rows, columns=layout.columns, origin=(GAP, 2))
        burned = text.any(axis=-1)
        assert burned.sum() > 50, "the banner should be drawn somewhere"
        assert not burned[y0 : y1 + 1, x0 : x1 + 1].any(), "banner text inside the stored crop"
