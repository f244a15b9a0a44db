"""End to end: ``usdcm ingest`` on a fresh synth export converts every image it wrote, the
JPEG XL and video files among them, to the crop, spacing and pixels synth drew."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tests.synth.reference import assert_within_loss, reencoded_twins
from typer.testing import CliRunner

from usdcm.artifacts.manifest import read_manifest
from usdcm.cli.app import app
from usdcm.ingest.convert import decode_volume
from usdcm.synth import write_export

# 8 patients, seed 28: 31 images, 9 of them re-encoded, in MPEG-2, H.264 (two levels), HEVC
# and the three JPEG XL syntaxes. Cines of 2-4 frames keep it small.
PATIENTS, SEED, FRAMES = 8, 28, 2
CODECS = {
    "1.2.840.10008.1.2.4.100",
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103",
    "1.2.840.10008.1.2.4.107",
    "1.2.840.10008.1.2.4.110",
    "1.2.840.10008.1.2.4.111",
    "1.2.840.10008.1.2.4.112",
}


def test_ingest_converts_every_image_of_a_fresh_export_codecs_included(tmp_path: Path) -> None:
    export = write_export(tmp_path / "pacs", patients=PATIENTS, seed=SEED, frames=FRAMES)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(export.root),
            "--out",
            str(out),
            "--labels",
            str(export.labels_path),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {row["source_path"]: row for row in read_manifest(out / "manifest.csv")}
    records = {record.path.relative_to(export.root).as_posix(): record for record in export.images}
    assert set(rows) == set(records)  # every image converted, nothing else
    with (out / "excluded.csv").open(newline="", encoding="utf-8") as handle:
        excluded = {row["path"] for row in csv.DictReader(handle)}
    assert not excluded & set(records)
    assert {record.transfer_syntax_uid for record in export.images} >= CODECS

    twins = reencoded_twins(patients=PATIENTS, seed=SEED, frames=FRAMES)
    assert {records[name].sop_instance_uid for name in records} >= set(twins)
    checked = set()
    for name, record in records.items():
        row = rows[name]
        assert row["transfer_syntax"] == record.transfer_syntax_uid
        assert row["photometric"] == record.photometric
        assert row["label"] == record.label
        assert int(row["frames"]) == record.frames
        assert row["crop"] == ",".join(str(value) for value in record.tissue_box)
        assert row["region_note"] == record.region_note
        spacing_mm = round(abs(record.regions[0].delta_x) * 10, 6)
        assert float(row["spacing_x_mm"]) == pytest.approx(spacing_mm)
        if record.sop_instance_uid not in twins:
            continue
        twin = tmp_path / "twin.dcm"
        twin.write_bytes(twins[record.sop_instance_uid])
        drawn = decode_volume(twin, keep_color=False)
        assert row["crop"] == drawn.crop
        stored = np.asarray(nib.load(out / row["image_path"]).dataobj)
        assert_within_loss(stored, drawn.volume, record.transfer_syntax_uid, record.recipe)
        checked.add(record.transfer_syntax_uid)
    assert checked == CODECS
