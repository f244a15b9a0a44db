"""Tests for usdcm.artifacts.instance: one header shape, and the journal's JSON form of it."""

from __future__ import annotations

import json
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.ingest.conftest import PATIENT_ID, write_us

from usdcm.artifacts.instance import RECORD_VERSION, InstanceHeader
from usdcm.ingest.scan import scan_file, scan_outcome
from usdcm.privacy import ProjectSecret

# A scan record exactly as the ingest journal stored it before InstanceHeader existed
# (usdcm 0.x, commit 49649c0), and until record version 2 added the demographics: such a
# record is refused (its file's header is scanned again, for the sex, age band and study
# year); only the conversion, the costly step, is reused.
OLD_JOURNAL_RECORD: dict[str, Any] = {
    "status": "dicom",
    "sop_class": "1.2.840.10008.5.1.4.1.1.3.1",
    "sop_uid": "1.2.826.0.1.3680043.8.498.1",
    "study_uid": "1.2.826.0.1.3680043.8.498.2",
    "series_uid": "1.2.826.0.1.3680043.8.498.3",
    "modality": "US",
    "manufacturer": "TestVendor",
    "model": "T1",
    "transfer_syntax": "1.2.840.10008.1.2.1",
    "photometric": "MONOCHROME2",
    "rows": 12,
    "columns": 16,
    "frames": 3,
    "samples": 1,
    "bits": 8,
    "pixel_bytes": 576,
    "frame_time_ms": 40.0,
    "patient_key": "0123456789abcdef01234567",
    "join": {"PatientID": "aa"},
    "phi": ["bb"],
}


DEMOGRAPHICS = {"sex": "F", "age_band": "40-49", "study_year": "2024"}
RECORD: dict[str, Any] = {**OLD_JOURNAL_RECORD, **DEMOGRAPHICS, "record_version": RECORD_VERSION}
"""A scan record of this usdcm."""


def test_a_journal_record_is_read_unchanged() -> None:
    header = InstanceHeader.from_record(RECORD)
    assert header.sop_instance_uid == RECORD["sop_uid"]
    assert header.declared_pixel_bytes == RECORD["pixel_bytes"]
    assert (header.frames, header.frame_time_ms) == (3, 40.0)
    assert (header.sex, header.age_band, header.study_year) == ("F", "40-49", "2024")
    scan_keys = {"status", "join", "phi"}
    assert header.to_record() == {
        key: value for key, value in RECORD.items() if key not in scan_keys
    }


def test_a_record_of_an_older_version_is_refused_so_its_header_is_scanned_again() -> None:
    with pytest.raises(ValueError, match="record version 1, not 2"):
        InstanceHeader.from_record(OLD_JOURNAL_RECORD)
    with pytest.raises(ValueError, match="record version 1, not 2"):
        InstanceHeader.from_record({**RECORD, "record_version": 1})


def test_a_scan_record_is_the_header_plus_the_scan_s_hashes(tmp_path: Path) -> None:
    path = write_us(tmp_path / "IM1", np.zeros((3, 12, 16), np.uint8), seed=5)
    secret = ProjectSecret(b"k" * 32)
    record = json.loads(json.dumps(scan_file(path, secret)))  # through the journal's JSON
    assert set(record) == set(RECORD)
    header = scan_outcome(record)
    assert isinstance(header, InstanceHeader)
    assert header.patient_key == secret.pseudonym(PATIENT_ID)
    assert (header.rows, header.columns, header.frames) == (12, 16, 3)
    assert header.declared_pixel_bytes == record["pixel_bytes"] == 3 * 12 * 16
    assert {
        "status": "dicom",
        **header.to_record(),
        "join": record["join"],
        "phi": record["phi"],
    } == record


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("rows", "12"),
        ("frames", None),
        ("sop_uid", 7),
        ("frame_time_ms", "40"),
        ("bits", 8.0),
        ("sex", None),
        ("study_year", 2024),
    ],
)
def test_a_record_that_does_not_fit_is_refused_not_misread(key: str, value: Any) -> None:
    record = {**RECORD, key: value}
    with pytest.raises((TypeError, ValueError)):
        InstanceHeader.from_record(record)


def test_a_record_missing_a_key_is_refused() -> None:
    for missing in ("samples", "age_band"):
        record = {key: value for key, value in RECORD.items() if key != missing}
        with pytest.raises(KeyError):
            InstanceHeader.from_record(record)


def test_the_header_is_frozen_and_has_no_instance_dict() -> None:
    header = InstanceHeader.from_record(RECORD)
    with pytest.raises(FrozenInstanceError):
        header.rows = 1  # type: ignore[misc]
    assert not hasattr(header, "__dict__")  # slots: one compact record per file
    assert sys.getsizeof(header) <= 8 * 19 + 64


def test_strings_repeated_across_a_series_are_shared() -> None:
    pool: dict[Any, Any] = {}
    first = InstanceHeader.from_record(
        json.loads(json.dumps(RECORD)), lambda v: pool.setdefault(v, v)
    )
    second = InstanceHeader.from_record(
        json.loads(json.dumps(RECORD)), lambda v: pool.setdefault(v, v)
    )
    assert first == second
    shared = ("study_instance_uid", "series_instance_uid", "manufacturer", "patient_key", "sex")
    for name in (*shared, "age_band", "study_year"):
        assert getattr(first, name) is getattr(second, name)
    assert first.sop_instance_uid is not second.sop_instance_uid  # unique per file: not pooled
