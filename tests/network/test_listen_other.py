"""A study that also holds non-ultrasound instances (an SR, a CT) never fails its sender:
``usdcm listen`` acknowledges them once on disk in ``EXPORT_DIR/.usdcm/other``, byte for byte,
and only ultrasound starts study work. Real peers: DCMTK's ``dcmsend`` and Orthanc."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.network.test_listen import _dcmsend, _stored, _tiny_instances, _wait_for, listening
from tests.peers import orthanc
from usdcm.network.store import ExportStore


def _data_set_bytes(path: Path) -> bytes:
    """The bytes after the File Meta Information: the data set that crossed the wire."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM", path
    # (0002,0000) File Meta Information Group Length, UL, explicit VR little endian
    assert raw[132:138] == b"\x02\x00\x00\x00UL", path
    length = int.from_bytes(raw[140:144], "little")
    return raw[144 + length :]


def _study_with_others(folder: Path) -> tuple[Path, list[Path]]:
    """One tiny US image, plus pydicom's CT and Comprehensive SR moved into its study (same
    patient, new series and instance UIDs): the US file and the two others."""
    us = _tiny_instances(folder / "us", 1, studies=1)[0]
    header = pydicom.dcmread(us, stop_before_pixels=True)
    others = []
    for name in ("CT_small.dcm", "test-SR.dcm"):
        source = get_testdata_file(name)
        assert source is not None, name
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID = header.StudyInstanceUID
        ds.PatientID = header.PatientID
        ds.PatientName = ""
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if 0xFFFCFFFC in ds:  # Data Set Trailing Padding: DCMTK drops it when it sends
            del ds[0xFFFCFFFC]
        path = folder / "other" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        others.append(path)
    return us, others


def _where(store: ExportStore, path: Path) -> Path:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    keys = store.keys(
        study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID, sop_uid=ds.SOPInstanceUID
    )
    return store.path_of(keys)


def _set_aside(store: Path) -> list[Path]:
    return sorted((store / ".usdcm" / "other").glob("*/*/*.dcm"))


def _paths_in(table: Path, column: str) -> list[str]:
    if not table.is_file():
        return []
    with table.open(newline="") as handle:
        return [row[column] for row in csv.DictReader(handle)]


def test_dcmsend_of_a_study_with_a_ct_and_an_sr_sets_them_aside(tmp_path: Path) -> None:
    us, others = _study_with_others(tmp_path / "outgoing")
    lone_sr = tmp_path / "outgoing" / "lone" / "sr.dcm"  # a study of an SR only: no work
    lone_sr.parent.mkdir()
    lone_sr.write_bytes(Path(str(get_testdata_file("test-SR.dcm"))).read_bytes())
    with listening(tmp_path, "--quiet", "500ms") as peer:
        result = _dcmsend(peer.port, tmp_path / "outgoing")
        assert result.returncode == 0, result.stderr
        _wait_for(lambda: " complete (" in peer.log_text(), 30, "the US study's quiet time")
        time.sleep(1.5)  # the SR-only study would have completed by now
    assert "No presentation context" not in result.stderr
    log = peer.log_text()
    assert "1 stored, 0 duplicates, 0 failed, 3 set aside" in log, log
    assert log.count(" complete (") == 1  # the US study only; set-aside instances start no work
    status = log.strip().splitlines()[-1]  # the line printed at exit
    assert status.startswith("associations") and ", 3 set aside |" in status, status
    store = ExportStore(peer.store)
    # the US image in the tree, the others under .usdcm/other, in the same study key
    assert _stored(peer.store) == [_where(store, us)]
    aside = store.aside()
    assert _set_aside(peer.store) == sorted(_where(aside, p) for p in [*others, lone_sr])
    assert _where(aside, others[0]).parts[-3] == _where(store, us).parts[-3]
    for sent in [us, *others, lone_sr]:
        target = _where(store, sent) if sent == us else _where(aside, sent)
        assert _data_set_bytes(target) == _data_set_bytes(sent), sent.name
    pending = json.loads((peer.store / ".usdcm" / "pending.json").read_text())
    assert pending["pending"] == []  # the US study's work ran; the SR-only study never pended
    # no UID in any name nor in the log
    uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in [us, *others, lone_sr]}
    names = [p.as_posix() for p in peer.store.rglob("*")]
    assert not any(uid in name for uid in uids for name in names)
    assert not any(uid in log for uid in uids)

    # `usdcm ingest EXPORT_DIR` reads the tree, never .usdcm/other
    data = tmp_path / "data"
    command = [sys.executable, "-m", "usdcm", "ingest", str(peer.store), "--out", str(data)]
    ingest = subprocess.run([*command, "--quiet"], capture_output=True, text=True, timeout=300)
    assert ingest.returncode == 0, ingest.stderr
    seen = _paths_in(data / "manifest.csv", "source_path")
    seen += _paths_in(data / "excluded.csv", "path")
    us_relative = _where(store, us).relative_to(peer.store).as_posix()
    assert any(path.endswith(us_relative) for path in seen), seen
    assert not [path for path in seen if ".usdcm" in path], seen


def test_default_modality_stores_sr_and_ct_in_the_tree_when_asked(tmp_path: Path) -> None:
    us, others = _study_with_others(tmp_path / "outgoing")
    with listening(tmp_path, "--modality", "SR", "--modality", "CT") as peer:
        result = _dcmsend(peer.port, tmp_path / "outgoing")
        assert result.returncode == 0, result.stderr
    store = ExportStore(peer.store)
    assert _stored(peer.store) == sorted(_where(store, p) for p in [us, *others])
    assert _set_aside(peer.store) == []
    assert "3 stored, 0 duplicates, 0 failed, 0 set aside" in peer.log_text()


def test_a_duplicate_set_aside_is_recorded_not_overwritten(tmp_path: Path) -> None:
    _, others = _study_with_others(tmp_path / "outgoing")
    with listening(tmp_path) as peer:
        assert _dcmsend(peer.port, others[0]).returncode == 0
        assert _dcmsend(peer.port, others[0]).returncode == 0
    store = ExportStore(peer.store)
    duplicates = store.duplicates()
    assert len(duplicates) == 1 and duplicates[0]["identical"] is True
    assert str(duplicates[0]["kept"]).startswith(".usdcm/other/")
    assert len(_set_aside(peer.store)) == 1
    assert "0 stored, 1 duplicates, 0 failed, 0 set aside" in peer.log_text()


def test_orthanc_sends_a_study_with_a_ct_and_an_sr_to_default_listen(tmp_path: Path) -> None:
    us, others = _study_with_others(tmp_path / "outgoing")
    with orthanc(tmp_path / "orthanc") as peer:
        for path in [us, *others]:
            peer.upload(path)
        studies = peer.studies()
        assert len(studies) == 1 and len(studies[0]["Series"]) == 3
        with listening(tmp_path, "--quiet", "1s", "--allow-ae", peer.aet) as listener:
            peer.add_modality("usdcm", aet="USDCM", port=listener.port)
            answer = peer.store_to("usdcm", studies[0]["ID"])  # an HTTP error if the job fails
            _wait_for(lambda: " complete (" in listener.log_text(), 30, "the study's quiet time")
    assert answer["FailedInstancesCount"] == 0, answer
    assert answer["InstancesCount"] == 3, answer
    log = listener.log_text()
    assert "1 stored, 0 duplicates, 0 failed, 2 set aside" in log, log
    store = ExportStore(listener.store)
    assert _stored(listener.store) == [_where(store, us)]
    aside = sorted(_where(store.aside(), p) for p in others)
    assert _set_aside(listener.store) == aside
    for sent in [us, *others]:
        received = _where(store, sent) if sent == us else _where(store.aside(), sent)
        original, got = pydicom.dcmread(sent), pydicom.dcmread(received)
        assert got.SOPInstanceUID == original.SOPInstanceUID
        assert got.get("PixelData") == original.get("PixelData"), sent.name
    assert studies[0]["MainDicomTags"]["StudyInstanceUID"] not in log


def test_modality_all_keeps_nothing_aside(tmp_path: Path) -> None:
    _, others = _study_with_others(tmp_path / "outgoing")
    with listening(tmp_path, "--modality", "ALL") as peer:
        assert _dcmsend(peer.port, *others).returncode == 0
    assert len(_stored(peer.store)) == 2 and _set_aside(peer.store) == []
