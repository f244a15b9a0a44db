"""Tests for usdcm.ingest.select (the one selection path) and the shared header scan."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.ingest.conftest import write_us
from usdcm.artifacts.instance import InstanceHeader
from usdcm.dicom.sop import US_IMAGE_STORAGE
from usdcm.errors import UsdcmError
from usdcm.ingest import IngestOptions, ingest
from usdcm.ingest import scan as scan_module
from usdcm.ingest.runstate import RunState
from usdcm.ingest.scan import scan_headers
from usdcm.ingest.select import (
    Exclusion,
    InstanceSelector,
    SelectionOptions,
    select_instances,
)
from usdcm.privacy import ProjectSecret

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def header(sop_uid: str, **changes: Any) -> InstanceHeader:
    """An 8x8 single-frame 8-bit US image header (64 bytes of pixel data), changed."""
    fields: dict[str, Any] = {
        "sop_class_uid": US_IMAGE_STORAGE,
        "sop_instance_uid": sop_uid,
        "study_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.3.4",
        "modality": "US",
        "manufacturer": "Acme",
        "model": "X1",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "photometric": "MONOCHROME2",
        "rows": 8,
        "columns": 8,
        "frames": 1,
        "samples_per_pixel": 1,
        "bits_allocated": 8,
        "frame_time_ms": None,
    }
    fields.update(changes)
    return InstanceHeader(**fields)


def test_duplicates_name_the_first_file_and_only_the_first_is_selected() -> None:
    outcomes = [
        ("a/IM1", header("1.1")),
        ("a/IM2", header("1.2")),
        ("b/IM1", header("1.1")),
        ("c/IM1", header("1.1")),
    ]
    decisions = select_instances(outcomes)
    assert decisions[:2] == [None, None]
    reason = "duplicate SOP instance: same SOPInstanceUID as a/IM1"
    assert decisions[2] == decisions[3] == Exclusion("duplicate", reason)


def test_an_excluded_file_is_never_the_first_of_a_duplicate() -> None:
    outcomes = [
        ("a", header("1.1", modality="CT", sop_class_uid=CT_IMAGE_STORAGE)),
        ("b", header("1.1")),
    ]
    first, second = select_instances(outcomes)
    assert first is not None and first.code == "modality"
    assert "add --modality CT" in first.reason
    assert second is None


def test_scan_exclusions_pass_through() -> None:
    symlink = Exclusion("symlink", "broken symbolic link")
    decisions = select_instances([("x", symlink), ("y", ("not_dicom", "no marker"))])
    assert decisions == [symlink, Exclusion("not_dicom", "no marker")]
    assert all(isinstance(why, Exclusion) for why in decisions)


def test_each_rule_gives_its_code() -> None:
    options = SelectionOptions(modalities=frozenset({"us"}), max_pixel_bytes=64)
    outcomes = [
        ("sr", header("2.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.88.11", modality="SR")),
        ("dir", header("2.2", sop_class_uid="1.2.840.10008.1.3.10")),
        ("nouid", header("")),
        ("sc", header("2.3", sop_class_uid="1.2.840.10008.5.1.4.1.1.7")),
        ("empty", header("2.4", rows=0)),
        ("big", header("2.5", columns=9)),
        ("fits", header("2.6")),
    ]
    codes = [None if why is None else why.code for why in select_instances(outcomes, options)]
    assert codes == [
        "non_image",
        "dicomdir",
        "unreadable",
        "sop_class",
        "non_image",
        "too_large",
        None,
    ]


def test_a_selector_fed_file_by_file_decides_as_select_instances() -> None:
    outcomes = [(f"f{index}", header(f"3.{index % 3}")) for index in range(7)]
    selector = InstanceSelector(SelectionOptions())
    assert [selector.decide(*outcome) for outcome in outcomes] == select_instances(outcomes)


def test_chunks_sharing_one_seen_map_decide_as_one_call(tmp_path: Path) -> None:
    outcomes = [
        ("a/IM1", header("1.1")),
        ("a/IM2", ("not_dicom", "no DICM")),
        ("b/IM1", header("1.2", modality="CT")),
        ("b/IM2", header("1.1")),
        ("c/IM1", header("1.2")),
        ("c/IM2", header("1.2")),
    ]
    whole = select_instances(outcomes)
    with RunState(tmp_path / "state.sqlite") as state:
        for seen in ({}, state.seen()):  # in memory, and on disk as ingest keeps it
            parts = [select_instances(outcomes[i : i + 2], seen=seen) for i in range(0, 6, 2)]
            assert [why for part in parts for why in part] == whole
            assert dict(seen) == {"1.1": "a/IM1", "1.2": "c/IM1"}
    assert not (tmp_path / "state.sqlite").exists()


def test_options_are_checked_and_modalities_upper_cased() -> None:
    assert SelectionOptions(modalities=frozenset({"us"})).modalities == frozenset({"US"})
    with pytest.raises(UsdcmError, match="max_pixel_bytes must be 0 or more, not -1"):
        SelectionOptions(max_pixel_bytes=-1)


@pytest.fixture
def slow_header(monkeypatch: pytest.MonkeyPatch) -> str:
    """Reading the header of any file named ``slow`` takes 30 s; the limit is 0.5 s."""
    real = scan_module.read_header

    def read_slowly(path: Path) -> Any:
        if path.name == "slow":
            time.sleep(30)
        return real(path)

    monkeypatch.setattr(scan_module, "read_header", read_slowly)
    monkeypatch.setattr(scan_module, "HEADER_TIMEOUT_S", 0.5)
    return "reading the header took over 0.5 s"


def test_a_slow_header_is_a_timeout_in_the_shared_scan_and_in_ingest(
    tmp_path: Path, slow_header: str
) -> None:
    source = tmp_path / "export"
    write_us(source / "slow", np.zeros((8, 8), np.uint8), seed=1)
    write_us(source / "quick", np.zeros((8, 8), np.uint8), seed=2)
    secret = ProjectSecret(b"s" * 32)
    paths = [source / "quick", source / "slow"]
    records = dict(scan_headers(paths, secret, workers=1))
    assert records[source / "slow"] == {
        "status": "excluded",
        "code": "timeout",
        "reason": slow_header,
    }
    assert records[source / "quick"]["status"] == "dicom"

    ingest(source, tmp_path / "out", IngestOptions(workers=1))
    excluded = (tmp_path / "out" / "excluded.csv").read_text(encoding="utf-8")
    assert excluded == f"path,code,reason\nslow,timeout,{slow_header}\n"
