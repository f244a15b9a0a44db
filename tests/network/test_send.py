"""send_files() against real peers on loopback: DCMTK's storescp, Orthanc over C-STORE and
STOW-RS (the SR lands inside its original study), and a dead port that fails fast into the
outbox."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.peers import free_port, orthanc, require
from tests.results.test_sr import ALGORITHM, CLASSES, SECRET, results, study_headers
from usdcm.errors import SendError
from usdcm.network.send import REASON_SUFFIX, DimseDestination, send_files
from usdcm.results.sr import study_sr, write_sr
from usdcm.synth import ExportSummary


@pytest.fixture(scope="module")
def srs(synth_mix: ExportSummary, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One SR per study of the 5-patient synthetic export."""
    out = tmp_path_factory.mktemp("srs")
    return [
        write_sr(study_sr(results(headers), classes=CLASSES, algorithm=ALGORITHM), out, SECRET)
        for headers in study_headers(synth_mix).values()
    ]


def _wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """DCMTK's storescp on a free loopback port; yields its destination and folder."""
    binary = require("storescp", "dcmtk")
    port, received = free_port(), tmp_path / "received"
    received.mkdir()
    process = subprocess.Popen(
        [binary, "--aetitle", "STORESCP", "--output-directory", str(received), "+xa", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield f"STORESCP@127.0.0.1:{port}", received
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_c_store_to_storescp_delivers_every_sr_unchanged(
    srs: list[Path], storescp: tuple[str, Path], tmp_path: Path
) -> None:
    destination, received = storescp
    result = send_files(srs, dimse=destination, outbox=tmp_path / "outbox")
    assert result.ok and result.sent == srs
    assert not (tmp_path / "outbox").exists()
    arrived = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, received.iterdir())}
    for path in srs:
        sent = pydicom.dcmread(path)
        assert arrived[sent.SOPInstanceUID] == sent  # every element, as written


def test_a_dead_port_fails_fast_into_the_outbox_and_a_later_send_empties_it(
    srs: list[Path], storescp: tuple[str, Path], tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    started = time.monotonic()
    result = send_files(srs, dimse=f"PACS@127.0.0.1:{free_port()}", outbox=outbox, retries=3)
    assert time.monotonic() - started < 2.0  # no retry loop against a peer that is not there
    assert not result.ok and not result.sent
    kept = sorted(outbox.glob("*.sr.dcm"))
    assert [p.name for p in kept] == sorted(p.name for p in srs)
    for path in kept:
        assert path.read_bytes() == (srs[0].parent / path.name).read_bytes()
        reason = json.loads(path.with_name(path.name + REASON_SUFFIX).read_text())
        assert "peer unreachable" in reason["reason"] and "refused" in reason["reason"].lower()
        assert reason["destination"].startswith("PACS@127.0.0.1:")
        for header in study_headers_of(path):  # no UID and no patient name in the reason
            assert header not in json.dumps(reason)
    # the outbox is sent again later: stored files leave it
    again = send_files(kept, dimse=storescp[0], outbox=outbox)
    assert again.ok and not list(outbox.iterdir())


def study_headers_of(path: Path) -> list[str]:
    sr = pydicom.dcmread(path)
    return [sr.StudyInstanceUID, sr.SOPInstanceUID, str(sr.PatientName), sr.PatientID]


def test_a_refused_file_is_retried_with_backoff_then_kept_with_its_reason(
    srs: list[Path], tmp_path: Path
) -> None:
    binary = require("storescp", "dcmtk")
    port = free_port()
    # this storescp refuses every association: the peer answers, so it is retried
    process = subprocess.Popen(
        [
            binary,
            "--aetitle",
            "STORESCP",
            "--output-directory",
            str(tmp_path),
            "--refuse",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        started = time.monotonic()
        result = send_files(
            srs[:1],
            dimse=f"STORESCP@127.0.0.1:{port}",
            outbox=tmp_path / "outbox",
            retries=2,
            backoff_s=0.2,
        )
        elapsed = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert not result.ok
    assert elapsed >= 0.2 + 0.4  # two retries, backoff doubling
    [reason] = result.failed.values()
    assert "peer unreachable" not in reason


def test_destinations_are_checked_before_anything_is_sent(tmp_path: Path) -> None:
    assert DimseDestination.parse(" ORTHANC@localhost:4242 ").port == 4242
    for bad in ("ORTHANC@localhost", "localhost:4242", "A@h:0", "A@h:70000", "@h:1"):
        with pytest.raises(SendError, match="AET@host:port"):
            send_files([], dimse=bad, outbox=tmp_path)
    with pytest.raises(SendError, match="http"):
        send_files([], dicomweb="ftp://pacs", outbox=tmp_path)
    with pytest.raises(SendError, match="one destination"):
        send_files([], dimse="A@h:1", dicomweb="http://h", outbox=tmp_path)


def _study_series_modalities(peer: object, study_uid: str) -> list[str]:
    studies = [
        s
        for s in peer.studies()  # type: ignore[attr-defined]
        if s["MainDicomTags"]["StudyInstanceUID"] == study_uid
    ]
    assert len(studies) == 1, "the SR must join the original study, not open a new one"
    return sorted(
        peer.rest(f"/series/{series}")["MainDicomTags"]["Modality"]  # type: ignore[attr-defined]
        for series in studies[0]["Series"]
    )


@pytest.mark.parametrize("how", ["dimse", "dicomweb"])
def test_orthanc_files_the_sr_inside_the_original_study(
    how: str, synth_mix: ExportSummary, tmp_path: Path
) -> None:
    studies = study_headers(synth_mix)
    study_uid, headers = next(iter(studies.items()))
    sr_path = write_sr(
        study_sr(results(headers), classes=CLASSES, algorithm=ALGORITHM), tmp_path / "sr", SECRET
    )
    with orthanc(tmp_path / "orthanc") as peer:
        for path in sorted(p for p in synth_mix.root.rglob("*") if p.is_file()):
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # junk files of the export
                continue
            if header.get("StudyInstanceUID") == study_uid and header.get("Modality") == "US":
                peer.upload(path)
        before = _study_series_modalities(peer, study_uid)
        if how == "dimse":
            target = {"dimse": f"{peer.aet}@127.0.0.1:{peer.dicom_port}"}
        else:
            target = {"dicomweb": peer.dicomweb_url}
        result = send_files([sr_path], outbox=tmp_path / "outbox", **target)
        assert result.ok, result.failed
        after = _study_series_modalities(peer, study_uid)
        assert "SR" not in before and sorted([*before, "SR"]) == after
        assert len(peer.studies()) == 1


def test_a_dead_dicomweb_service_fails_fast_into_the_outbox(
    srs: list[Path], tmp_path: Path
) -> None:
    started = time.monotonic()
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"
    result = send_files(srs, dicomweb=dead, outbox=tmp_path / "outbox", retries=3)
    assert time.monotonic() - started < 5.0
    assert not result.sent and len(result.failed) == len(srs)
    assert all(reason.startswith("peer unreachable") for reason in result.failed.values())


class _Stow:
    """A STOW-RS service that answers with a FailedSOPSequence of ``failures`` items."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def store_instances(self, datasets: list[pydicom.Dataset]) -> pydicom.Dataset:
        answer = pydicom.Dataset()
        items = []
        for _ in range(self.failures):
            item = pydicom.Dataset()
            item.FailureReason = 0xC122
            items.append(item)
        answer.FailedSOPSequence = items
        return answer


@pytest.mark.parametrize(("failures", "stored"), [(0, True), (1, False)])
def test_stow_responses_are_checked_and_an_empty_failed_sequence_is_success(
    failures: int, stored: bool, srs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import usdcm.network.send as send

    monkeypatch.setattr(send, "_dicomweb_client", lambda url, token_file: _Stow(failures))
    result = send_files(srs[:1], dicomweb="http://pacs/dicom-web", outbox=tmp_path, backoff_s=0)
    assert result.ok is stored
    if not stored:
        assert list(result.failed.values()) == [
            "STOW-RS refused the instance: failure reason 0xC122"
        ]
