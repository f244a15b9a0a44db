"""Ingest of a whole synthetic export: the invariants users rely on."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.ingest.conftest import ACCESSION, BIRTH_DATE, PATIENT_ID, write_us
from usdcm.artifacts.manifest import MANIFEST_COLUMNS, read_manifest
from usdcm.dicom.demographics import age_band
from usdcm.errors import InvalidSourceError
from usdcm.ingest import IngestOptions, IngestResult, ingest
from usdcm.synth import ExportSummary
from usdcm.synth.plan import draw_plan


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


def test_manifest_notes_the_region_habits_synth_wrote(
    ingested: tuple[IngestResult, Path], synth_export: ExportSummary
) -> None:
    _, out = ingested
    rows = {row["sop_uid"]: row for row in read_csv(out / "manifest.csv")}
    notes = set()
    for record in synth_export.images:
        row = rows[record.sop_instance_uid]
        assert row["region_note"] == record.region_note, record.region_habit
        assert row["crop"] == ",".join(str(value) for value in record.tissue_box)
        assert float(row["spacing_x_mm"]) > 0 and float(row["spacing_y_mm"]) > 0
        notes.add(row["region_note"])
    assert {"", "clipped_1px", "negative_delta_x", "clipped_1px;negative_delta_x"} <= notes


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


def test_options_select_modalities_size_and_colour(
    synth_export: ExportSummary, tmp_path: Path
) -> None:
    ct = synth_export.junk["non_us"].relative_to(synth_export.root).as_posix()
    options = IngestOptions(workers=1, modalities=frozenset({"US", "CT"}), keep_color=True)
    ingest(synth_export.root, tmp_path / "colour", options)
    manifest = read_csv(tmp_path / "colour" / "manifest.csv")
    assert ct in {row["source_path"] for row in manifest}
    us = [row for row in manifest if row["modality"] == "US"]
    assert {row["channels"] for row in us} == {"3"}
    image = nib.load(tmp_path / "colour" / us[0]["image_path"])
    assert image.shape[3] == 3

    small = IngestOptions(workers=1, max_pixel_bytes=60_000)
    result = ingest(synth_export.root, tmp_path / "small", small)
    excluded = read_csv(tmp_path / "small" / "excluded.csv")
    too_large = [row for row in excluded if row["code"] == "too_large"]
    assert too_large and result.excluded_by_code["too_large"] == len(too_large)
    assert "raise --max-pixel-bytes" in too_large[0]["reason"]


def test_a_shared_secret_gives_the_same_pseudonyms(
    synth_export: ExportSummary, tmp_path: Path
) -> None:
    secret = tmp_path / "project.secret"
    keys = []
    for name in ("a", "b"):
        ingest(synth_export.root, tmp_path / name, IngestOptions(workers=1, secret_path=secret))
        keys.append([row["patient_key"] for row in read_csv(tmp_path / name / "manifest.csv")])
    assert keys[0] == keys[1]
    ingest(synth_export.root, tmp_path / "c", IngestOptions(workers=1))
    other = [row["patient_key"] for row in read_csv(tmp_path / "c" / "manifest.csv")]
    assert set(other).isdisjoint(keys[0])


def test_folders_named_after_the_patient_are_redacted(
    tmp_path: Path, marked_cine: np.ndarray
) -> None:
    source = tmp_path / "export"
    write_us(source / "QQPHI_HIDDEN_19440704" / "cine", marked_cine, region=(1, 1, 10, 10))
    (source / "QQPHI_HIDDEN_19440704" / "notes.txt").write_text("not dicom")
    out = tmp_path / "out"
    ingest(source, out, IngestOptions(workers=1))
    (row,) = read_csv(out / "manifest.csv")
    assert row["source_path"].startswith("redacted-") and row["source_path"].endswith("/cine")
    (excluded,) = read_csv(out / "excluded.csv")
    assert excluded["path"].startswith("redacted-")
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".gz":
            for text in ("QQPHI", "HIDDEN", PATIENT_ID, ACCESSION, BIRTH_DATE):
                assert text.encode() not in path.read_bytes(), (text, path.name)


def full_dates(synth_export: ExportSummary) -> re.Pattern[str]:
    """Every birth and study date of the export's patients, in the ways dates are written,
    not glued to other digits."""
    plan = draw_plan(
        patients=synth_export.n_patients, seed=7, abnormal_fraction=0.5, difficulty=0.3, frames=8
    )
    words = set()
    for patient in plan.patients:
        for date in (patient.birth_date, patient.study_date):
            for form in ("%Y%m%d", "%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%d/%m/%Y", "%m/%d/%Y"):
                words.add(date.strftime(form))
    return re.compile("|".join(rf"(?<![\d.]){re.escape(word)}(?!\d)" for word in words))


def test_the_manifest_records_sex_age_band_and_study_year_from_the_headers(
    synth_export: ExportSummary, ingested: tuple[IngestResult, Path]
) -> None:
    _, out = ingested
    plan = draw_plan(
        patients=synth_export.n_patients, seed=7, abnormal_fraction=0.5, difficulty=0.3, frames=8
    )
    by_sop = {str(instance.sop_instance_uid): patient for patient, _, instance in plan.instances}
    rows = read_manifest(out / "manifest.csv")
    assert rows and {row["schema_version"] for row in rows} == {"3"}
    for row in rows:
        patient = by_sop[row["sop_uid"]]
        expected = (patient.sex, age_band(patient.age_years), str(patient.study_date.year))
        assert (row["sex"], row["age_band"], row["study_year"]) == expected
    # read both ways: from PatientAge, and from the birth date at the study date
    assert {patient.writes_age for patient in plan.patients} == {True, False}
    assert len({row["sex"] for row in rows}) == 2 and len({row["age_band"] for row in rows}) > 1


def test_no_full_date_reaches_the_manifest_ingest_json_excluded_or_journal(
    synth_export: ExportSummary, ingested: tuple[IngestResult, Path]
) -> None:
    _, out = ingested
    pattern = full_dates(synth_export)
    outputs = ["manifest.csv", "ingest.json", "excluded.csv", ".usdcm/journal.jsonl"]
    for name in outputs:
        text = (out / name).read_text(encoding="utf-8")
        assert not pattern.search(text), f"a full date in {name}"
    assert pattern.search("study 20240108 x")  # the check finds a date where there is one


def test_ingest_json_counts_the_images_cropped_to_a_region_and_those_without(
    ingested: tuple[IngestResult, Path],
) -> None:
    result, out = ingested
    summary = json.loads((out / "ingest.json").read_text())
    rows = read_manifest(out / "manifest.csv")
    cropped = sum(1 for row in rows if row["crop"])
    assert summary["n_cropped"] == cropped and cropped > 0
    assert summary["n_without_region"] == len(rows) - cropped == result.n_without_region
    assert summary["n_cropped"] + summary["n_without_region"] == summary["n_images"]


def test_an_image_without_a_region_is_counted_and_keeps_its_whole_frame(tmp_path: Path) -> None:
    source = tmp_path / "pacs"
    source.mkdir()
    write_us(source / "IM1", np.zeros((2, 12, 16), np.uint8), seed=1)
    result = ingest(source, tmp_path / "out", IngestOptions(workers=1))
    summary = json.loads((tmp_path / "out" / "ingest.json").read_text())
    (row,) = read_manifest(tmp_path / "out" / "manifest.csv")
    assert row["crop"] == "" and (row["height"], row["width"]) == ("12", "16")
    assert (summary["n_cropped"], summary["n_without_region"]) == (0, 1)
    assert result.n_without_region == 1


def test_journal_records_of_version_1_are_scanned_again_for_the_demographics(
    synth_export: ExportSummary, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    ingest(synth_export.root, out, IngestOptions(workers=1))
    before = (out / "manifest.csv").read_bytes()
    journal = out / ".usdcm" / "journal.jsonl"
    old = []
    for line in journal.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry["t"] == "scan":
            for key in ("sex", "age_band", "study_year", "record_version"):
                entry["v"].pop(key, None)
        old.append(json.dumps(entry))
    journal.write_text("\n".join(old) + "\n", encoding="utf-8")
    again = ingest(synth_export.root, out, IngestOptions(workers=1))
    assert again.n_converted == 0  # the images are reused; only the headers are read again
    assert (out / "manifest.csv").read_bytes() == before
