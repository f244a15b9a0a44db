from __future__ import annotations

from pathlib import Path

import pytest

from usdcm.artifacts.manifest import (
    MANIFEST_COLUMNS,
    SCHEMA_VERSION,
    ManifestRow,
    read_manifest,
    write_manifest,
)
from usdcm.errors import ManifestError, SchemaVersionError


def test_round_trip_keeps_columns_and_utf8(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    row.update(image_id="a", image_path="images/a.nii.gz", patient_key="k", label="Ödem, schwer")
    write_manifest(path, [row])
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    assert read_manifest(path) == [row]
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file was renamed


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("image_id,label\na,b\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="image_path, patient_key"):
        read_manifest(path)


def test_missing_manifest_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="usdcm ingest"):
        read_manifest(tmp_path / "none.csv")


def a_row(**changes: object) -> ManifestRow:
    fields: dict[str, object] = {
        "image_id": "a1",
        "image_path": "images/a1.nii.gz",
        "patient_key": "p1",
        "study_key": "s1",
        "series_key": "r1",
        "study_uid": "1.2",
        "series_uid": "1.2.3",
        "sop_uid": "1.2.3.4",
        "label": "",
        "frames": 3,
        "height": 10,
        "width": 12,
        "channels": 1,
        "spacing_x_mm": None,
        "spacing_y_mm": 0.25,
        "crop": "",
        "manufacturer": "Acme",
        "model": "X1",
        "modality": "US",
        "sop_class": "Ultrasound Image Storage",
        "photometric": "MONOCHROME2",
        "transfer_syntax": "1.2.840.10008.1.2.1",
        "frame_time_ms": 33.5,
        "source_path": "PT1/IM1",
        "source_size": 1234,
    }
    fields.update(changes)
    return ManifestRow(**fields)  # type: ignore[arg-type]


def test_a_typed_row_is_written_with_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    write_manifest(
        path,
        [a_row(sex="F", age_band="90+", study_year="2019", region_note="clipped_1px")],
    )
    header, line = path.read_text(encoding="utf-8").splitlines()
    assert header.split(",") == list(MANIFEST_COLUMNS) and header.endswith(",schema_version")
    assert header.endswith(",sex,age_band,study_year,schema_version")
    assert ",crop,region_note,manufacturer," in header
    assert line == (
        "a1,images/a1.nii.gz,p1,s1,r1,1.2,1.2.3,1.2.3.4,,3,10,12,1,,0.25,,clipped_1px,Acme,X1,"
        "US,Ultrasound Image Storage,MONOCHROME2,1.2.840.10008.1.2.1,33.5,PT1/IM1,1234,"
        "F,90+,2019,3"
    )
    (row,) = read_manifest(path)
    assert row["schema_version"] == str(SCHEMA_VERSION) == "3"
    assert row["region_note"] == "clipped_1px"


def test_region_note_is_empty_by_default_and_joins_notes_with_semicolons(
    tmp_path: Path,
) -> None:
    assert a_row().region_note == ""
    path = tmp_path / "manifest.csv"
    write_manifest(
        path, [a_row(), a_row(image_id="a2", region_note="clipped_1px;negative_delta_x")]
    )
    first, second = read_manifest(path)
    assert first["region_note"] == ""
    assert second["region_note"].split(";") == ["clipped_1px", "negative_delta_x"]


def test_a_version_2_manifest_is_still_read_without_region_note(tmp_path: Path) -> None:
    columns = [column for column in MANIFEST_COLUMNS if column != "region_note"]
    path = tmp_path / "manifest.csv"
    values = dict.fromkeys(columns, "")
    values.update(image_id="a", image_path="images/a.nii.gz", patient_key="p", label="x", sex="F")
    values["schema_version"] = "2"
    path.write_text(
        ",".join(columns) + "\n" + ",".join(values[c] for c in columns) + "\n", encoding="utf-8"
    )
    (row,) = read_manifest(path)
    assert row["schema_version"] == "2" and row["sex"] == "F"
    assert row.get("region_note", "") == ""
    # rewritten by this usdcm, it keeps its version and gets an empty region_note
    again = tmp_path / "again.csv"
    write_manifest(again, [row])
    (reread,) = read_manifest(again)
    assert reread["region_note"] == "" and reread["schema_version"] == "2"


def test_demographics_are_unknown_by_default() -> None:
    row = a_row()
    assert (row.sex, row.age_band, row.study_year) == ("", "", "")


def test_a_version_1_manifest_is_still_read_without_the_demographic_columns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "manifest.csv"
    path.write_text(
        "image_id,image_path,patient_key,label,crop,schema_version\na,images/a.nii.gz,p,x,,1\n",
        encoding="utf-8",
    )
    (row,) = read_manifest(path)
    assert row["schema_version"] == "1" and row.get("sex", "") == ""


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"image_id": ""}, "needs image_id"),
        ({"patient_key": ""}, "patient_key"),
        ({"height": 0}, ">= 1"),
    ],
)
def test_a_row_that_is_not_an_image_is_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        a_row(**changes)


def test_a_hand_written_manifest_without_a_version_is_read(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "image_id,image_path,patient_key,label\na,images/a.nii.gz,p,x\n", encoding="utf-8"
    )
    assert read_manifest(path) == [
        {"image_id": "a", "image_path": "images/a.nii.gz", "patient_key": "p", "label": "x"}
    ]


def test_a_manifest_of_another_version_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    write_manifest(path, [a_row()])
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.rindex(",3")] + ",4\n", encoding="utf-8")
    with pytest.raises(
        SchemaVersionError, match="schema version 4; this usdcm reads version 3"
    ) as err:
        read_manifest(path)
    assert str(path) in str(err.value) and "usdcm ingest" in str(err.value)
