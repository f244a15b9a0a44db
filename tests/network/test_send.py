"""send_files() against real peers on loopback: DCMTK's storescp, Orthanc over C-STORE and
STOW-RS (the SR lands inside its original study), and a dead port that fails fast into the
outbox."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
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
        assert reason["attempts"] == 1 and reason["tls"] is False  # failed fast: one try
        assert reason["first_failed_at"] == reason["failed_at"]
        for header in study_headers_of(path):  # no UID and no patient name in the reason
            assert header not in json.dumps(reason)
    # the outbox is sent again later: stored files leave it
    again = send_files(kept, dimse=storescp[0], outbox=outbox)
    assert again.ok and not list(outbox.iterdir())


def study_headers_of(path: Path) -> list[str]:
    sr = pydicom.dcmread(path)
    return [sr.StudyInstanceUID, sr.SOPInstanceUID, str(sr.PatientName), sr.PatientID]


def test_a_send_opens_one_connection_per_association_and_no_empty_probe(
    srs: list[Path], tmp_path: Path
) -> None:
    # a TCP probe before each association leaves the peer an empty connection that a
    # pynetdicom SCP keeps for its ACSE timeout; the reachability check runs only on failure
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE, evt

    opened: list[str] = []
    scp = AE(ae_title="COUNT")
    for sop_class in sorted({pydicom.dcmread(path).SOPClassUID for path in srs}):
        scp.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    handlers = [
        (evt.EVT_CONN_OPEN, lambda event: opened.append(event.address[0])),
        (evt.EVT_C_STORE, lambda _event: 0x0000),
    ]
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    try:
        port = server.server_address[1]
        result = send_files(srs, dimse=f"COUNT@127.0.0.1:{port}", outbox=tmp_path / "outbox")
    finally:
        server.shutdown()
    assert result.ok and len(result.sent) == len(srs)
    assert len(opened) == 1


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
        dimse = f"{peer.aet}@127.0.0.1:{peer.dicom_port}" if how == "dimse" else None
        dicomweb = peer.dicomweb_url if how == "dicomweb" else None
        result = send_files([sr_path], outbox=tmp_path / "outbox", dimse=dimse, dicomweb=dicomweb)
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


class StowService:
    """A STOW-RS service on loopback (``http.server``, or https with ``tls``) that answers
    each POST as ``answer`` says and keeps each part it received, as bytes.

    ``answer``: ``"stored"`` (200, the instance in ReferencedSOPSequence), ``"empty"`` (200,
    an empty FailedSOPSequence), ``"bare"`` (200, no body), ``"refused"`` (409, a
    FailedSOPSequence item with reason 0xC122), ``"unlisted"`` (200, another instance
    listed) or ``"http500"``.
    """

    def __init__(
        self, answer: str, tls: tuple[Path, Path] | None = None, port: int | None = None
    ) -> None:
        self.answer = answer
        self.parts: list[bytes] = []
        self.authorizations: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                service.authorizations.append(self.headers.get("Authorization", ""))
                boundary = self.headers["Content-Type"].split("boundary=")[1].strip('"')
                for part in body.split(f"--{boundary}".encode())[1:-1]:
                    service.parts.append(part.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")])
                code, payload = service.reply(service.parts[-1])
                self.send_response(code)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, part: bytes) -> tuple[int, bytes]:
        instance = str(pydicom.dcmread(BytesIO(part), stop_before_pixels=True).SOPInstanceUID)
        listed = {
            "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [instance]}}]}
        }
        other = {
            "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3"]}}]}
        }
        failed = {
            "00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [0xC122]}}]}
        }
        answers: dict[str, tuple[int, object]] = {
            "stored": (200, listed),
            "empty": (200, {"00081198": {"vr": "SQ", "Value": []}}),
            "bare": (200, None),
            "refused": (409, failed),
            "unlisted": (200, other),
            "http500": (500, None),
        }
        code, body = answers[self.answer]
        return code, b"" if body is None else json.dumps(body).encode()

    def __enter__(self) -> StowService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("stored", ""),
        ("empty", ""),
        ("bare", ""),
        ("refused", "STOW-RS refused the instance: failure reason 0xC122"),
        ("unlisted", "STOW-RS answered HTTP 200 without listing the instance as stored"),
        ("http500", "STOW-RS failed: HTTP 500"),
    ],
)
def test_stow_answers_are_checked_and_an_empty_failed_sequence_is_success(
    answer: str, reason: str, srs: list[Path], tmp_path: Path
) -> None:
    with StowService(answer) as service:
        result = send_files(
            srs[:1], dicomweb=service.url, outbox=tmp_path / "outbox", retries=1, backoff_s=0
        )
    assert service.parts[0] == srs[0].read_bytes()  # the file as it is on disk
    assert result.ok is (not reason)
    if reason:
        assert len(service.parts) == 2  # a refusal is retried
        assert list(result.failed.values()) == [reason]
        [kept] = result.failed
        record = json.loads(kept.with_name(kept.name + REASON_SUFFIX).read_text())
        assert record["attempts"] == 2 and record["reason"] == reason


def test_a_dicomweb_url_never_carries_a_credential(tmp_path: Path) -> None:
    for url in ("https://user:secret@pacs/dicom-web", "https://pacs/dicom-web?access_token=secret"):
        with pytest.raises(SendError) as caught:
            send_files([], dicomweb=url, outbox=tmp_path)
        assert "secret" not in str(caught.value)
