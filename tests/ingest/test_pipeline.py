"""Ingest of a whole synthetic export: the invariants users rely on."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import pytest

from usdcm.errors import InvalidSourceError
from usdcm.ingest import IngestOptions, IngestResult, ingest
from usdcm.manifest import MANIFEST_COLUMNS
from usdcm.synth import ExportSummary


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_every_file_is_in_the_manifest_or_excluded_exactly_once(
    synth_export: ExportSummary, ingested: tuple[IngestResult, Path]
) -> None:
    _, out = ingested
    manifest = read_csv(out / "manifest.csv")
    excluded = read_csv(out / "excluded.csv")
    listed = [row["source_path"] for row in manifest] + [row["path"] for row in excluded]
    assert len(listed) == len(set(listed))
    assert set(listed) == all_files(synth_export.root)
    assert len(listed) == synth_export.n_files


def test_images_and_junk_end_where_they_should(
    synth_export: ExportSummary, ingested: tuple[IngestResult, Path]
) -> None:
    _, out = ingested
    manifest = read_csv(out / "manifest.csv")
    root = synth_export.root
    assert {row["source_path"] for row in manifest} == {
        p.relative_to(root).as_posix() for p in synth_export.image_paths
    }
    codes = {row["path"]: row["code"] for row in read_csv(out / "excluded.csv")}
    rel = {name: path.relative_to(root).as_posix() for name, path in synth_export.junk.items()}
    assert codes[rel["text"]] == "not_dicom"
    assert codes[rel["truncated"]] in {"decode_error", "unreadable"}
    assert codes[rel["sr"]] == "non_image"
    assert codes[rel["non_us"]] == "modality"
    assert codes[rel["secondary_capture"]] == "sop_class"
    assert codes[rel["duplicate"]] == "duplicate"
    assert codes[rel["dicomdir"]] == "dicomdir"
    assert codes["labels.csv"] == "not_dicom"


def test_manifest_rows_are_complete_and_point_at_real_images(
    ingested: tuple[IngestResult, Path],
) -> None:
    result, out = ingested
    manifest = read_csv(out / "manifest.csv")
    assert tuple(manifest[0]) == MANIFEST_COLUMNS
    assert len(manifest) == result.n_images > 0
    assert len({row["sop_uid"] for row in manifest}) == len(manifest)
    photometrics = {row["photometric"] for row in manifest}
    assert {"MONOCHROME2", "RGB", "YBR_FULL_422", "PALETTE COLOR"} <= photometrics
    for row in manifest:
        assert row["label"] in {"normal", "abnormal"}
        assert row["crop"] and float(row["spacing_x_mm"]) > 0 and float(row["spacing_y_mm"]) > 0
        image = nib.load(out / row["image_path"])
        assert image.shape[:3] == (int(row["width"]), int(row["height"]), int(row["frames"]))
        zooms = image.header.get_zooms()
        assert zooms[0] == pytest.approx(float(row["spacing_x_mm"]), rel=1e-5)
    assert any(int(row["frames"]) > 1 for row in manifest)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        Path(row["image_path"]).name for row in manifest
    )


def test_ingest_json_counts_reasons_and_labels(ingested: tuple[IngestResult, Path]) -> None:
    result, out = ingested
    summary = json.loads((out / "ingest.json").read_text())
    assert summary["n_files"] == result.n_files
    assert summary["n_images"] + summary["n_excluded"] == summary["n_files"]
    assert sum(summary["excluded_by_code"].values()) == summary["n_excluded"]
    assert summary["labels"]["key"] == "AccessionNumber"
    assert summary["labels"]["unlabelled_images"] == 0
    assert summary["labels"]["unmatched_keys"] == 0
    assert summary["versions"]["pydicom"]


def test_no_identifier_reaches_any_output(
    synth_export: ExportSummary, ingested: tuple[IngestResult, Path]
) -> None:
    _, out = ingested
    assert synth_export.phi
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".gz":
            import gzip

            data = gzip.decompress(data)
        for text in synth_export.phi:
            assert text.encode() not in data, f"{text!r} found in {path.name}"
            assert text not in path.name


def test_rerun_converts_nothing_and_a_changed_file_only_it(
    synth_export: ExportSummary, tmp_path: Path
) -> None:
    source = tmp_path / "pacs"
    shutil.copytree(synth_export.root, source)
    out = tmp_path / "out"
    first = ingest(source, out, IngestOptions(workers=1))
    before = (out / "manifest.csv").read_bytes()
    second = ingest(source, out, IngestOptions(workers=1))
    decode_errors = first.excluded_by_code.get("decode_error", 0)
    assert second.n_converted == 0 and second.n_reused == first.n_images + decode_errors
    assert (out / "manifest.csv").read_bytes() == before
    changed = synth_export.image_paths[0].relative_to(synth_export.root)
    os.utime(source / changed, ns=(1, 1))
    third = ingest(source, out, IngestOptions(workers=1))
    assert third.n_converted == 1
    assert (out / "manifest.csv").read_bytes() == before


def test_missing_or_empty_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSourceError, match="does not exist"):
        ingest(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidSourceError, match="holds no files"):
        ingest(tmp_path / "empty", tmp_path / "out")
