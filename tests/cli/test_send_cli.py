"""``usdcm send``: a send to a dead port fills the outbox; ``usdcm send OUTBOX`` empties it
into a live DCMTK storescp, Orthanc (C-STORE and STOW-RS) or a TLS peer, and the peer holds
each instance as it was written; a partly failing resend keeps exactly the failed files;
usage errors are one line and exit 2."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from tests.network.test_send import StowService, _wait_for_port, srs
from tests.network.test_send_tls import Certificates, certs
from tests.peers import free_port, orthanc, require
from typer.testing import CliRunner

from usdcm.cli.app import app
from usdcm.network.outbox import entries, read_reason
from usdcm.synth import ExportSummary

__all__ = ["certs", "srs"]  # fixtures shared from the network tests

UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def _send(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["send", *args], env=env)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@contextlib.contextmanager
def _storescp(port: int, received: Path, *extra: str) -> Iterator[str]:
    """DCMTK's storescp on ``port``; yields its destination. Without ``+xa`` in ``extra``
    it accepts uncompressed transfer syntaxes only."""
    binary = require("storescp", "dcmtk")
    received.mkdir(parents=True, exist_ok=True)
    command = [binary, "--aetitle", "STORESCP", "--output-directory", str(received), *extra]
    process = subprocess.Popen(
        [*command, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_port(port)
        yield f"STORESCP@127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def outgoing(srs: list[Path], synth_mix: ExportSummary, tmp_path: Path) -> list[Path]:
    """A folder of files to send: the study SRs, one uncompressed US image and one in a
    compressed transfer syntax (as the export wrote them)."""
    folder = tmp_path / "outgoing"
    folder.mkdir()
    images = [record for record in synth_mix.images if record.part10]
    plain = next(r for r in images if r.transfer_syntax_uid in UNCOMPRESSED)
    packed = next(r for r in images if r.transfer_syntax_uid not in UNCOMPRESSED)
    for index, record in enumerate((plain, packed)):
        shutil.copyfile(synth_mix.root / record.path, folder / f"image{index}.dcm")
    for path in srs:
        shutil.copyfile(path, folder / path.name)
    return sorted(folder.iterdir())


def _same_instances(sent: list[Path], received: list[Path]) -> None:
    """Every file sent arrived: the same data set, element for element, pixels as bytes."""
    arrived = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, received)}
    assert len(arrived) == len(sent)
    for path in sent:
        original = pydicom.dcmread(path)
        copy = arrived[original.SOPInstanceUID]
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert copy == original
        if "PixelData" in original:
            assert copy.PixelData == original.PixelData


def test_a_dead_port_fills_the_outbox_and_usdcm_send_empties_it(
    outgoing: list[Path], tmp_path: Path
) -> None:
    folder, port = outgoing[0].parent, free_port()
    code, output = _send(str(folder), "--to", f"PACS@127.0.0.1:{port}")
    outbox = folder / "outbox"
    assert code == 1
    assert (
        f"sent 0, still failing {len(outgoing)}; outbox {outbox}: {len(outgoing)} files" in output
    )
    assert "peer unreachable" in output
    assert [p.name for p in entries(outbox)] == sorted(p.name for p in outgoing)
    assert sorted(folder.glob("*.dcm")) == outgoing  # files outside an outbox stay
    # again, to the destination its reasons record: still dead, one more attempt each
    code, output = _send(str(outbox), "--retries", "0")
    assert code == 1 and f"still failing {len(outgoing)}" in output
    for entry in entries(outbox):
        reason = read_reason(entry)
        assert reason is not None and reason.attempts == 2
        assert reason.destination == f"PACS@127.0.0.1:{port}" and not reason.tls
        assert reason.first_failed_at <= reason.failed_at
    # the PACS is back, on the port recorded: the outbox empties into it
    with _storescp(port, tmp_path / "received", "+xa"):
        code, output = _send(str(outbox))
    assert code == 0, output
    assert f"sent {len(outgoing)}, still failing 0; outbox {outbox}: 0 files" in output
    assert not list(outbox.iterdir())
    _same_instances(outgoing, sorted((tmp_path / "received").iterdir()))
    code, output = _send(str(outbox))  # an empty outbox: nothing to do, nothing left
    assert code == 0 and f"sent 0, still failing 0; outbox {outbox}: 0 files" in output


def test_a_partly_failing_resend_keeps_exactly_the_failed_files(
    outgoing: list[Path], tmp_path: Path
) -> None:
    folder = outgoing[0].parent
    code, _ = _send(str(folder), "--to", f"PACS@127.0.0.1:{free_port()}")
    assert code == 1
    outbox = folder / "outbox"
    packed = outbox / "image1.dcm"
    before = read_reason(packed)
    # this storescp takes uncompressed transfer syntaxes only: the compressed image fails
    with _storescp(free_port(), tmp_path / "received") as destination:
        code, output = _send(str(outbox), "--to", destination, "--retries", "1", "--backoff", "0")
    assert code == 1
    assert f"sent {len(outgoing) - 1}, still failing 1; outbox {outbox}: 1 file" in output
    assert "error: 1 file still failing" in output
    assert entries(outbox) == [packed]
    assert sorted(p.name for p in outbox.iterdir()) == ["image1.dcm", "image1.dcm.reason.json"]
    assert packed.read_bytes() == (folder / "image1.dcm").read_bytes()
    after = read_reason(packed)
    assert before is not None and after is not None
    code, output = _send(str(outbox), "--outbox", str(tmp_path / "elsewhere"), "--to", "A@h:1")
    assert code == 2 and "is an outbox, and its files stay in it until sent" in output
    assert after.attempts == before.attempts + 2  # a try and its retry
    assert after.destination == destination and after.reason != before.reason
    assert after.first_failed_at == before.first_failed_at
    _same_instances(
        [p for p in outgoing if p.name != "image1.dcm"],
        sorted((tmp_path / "received").iterdir()),
    )


def _study_of(peer: object, study_uid: str) -> dict[str, object]:
    [study] = [
        s
        for s in peer.studies()  # type: ignore[attr-defined]
        if s["MainDicomTags"]["StudyInstanceUID"] == study_uid
    ]
    return study  # type: ignore[no-any-return]


@pytest.mark.parametrize("how", ["--to", "--dicomweb"])
def test_the_outbox_empties_into_orthanc_inside_the_original_studies(
    how: str, srs: list[Path], synth_mix: ExportSummary, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    for path in srs:
        shutil.copyfile(path, tmp_path / path.name)
    code, _ = _send(str(tmp_path), "--outbox", str(outbox), "--to", f"P@127.0.0.1:{free_port()}")
    assert code == 1 and len(entries(outbox)) == len(srs)
    studies = {str(pydicom.dcmread(p).StudyInstanceUID) for p in srs}
    with orthanc(tmp_path / "orthanc") as peer:
        for record in (r for r in synth_mix.images if r.part10):
            header = pydicom.dcmread(synth_mix.root / record.path, stop_before_pixels=True)
            if str(header.StudyInstanceUID) in studies:
                peer.upload(synth_mix.root / record.path)
        assert len(peer.studies()) == len(studies)  # each SR's original study is there
        target = f"{peer.aet}@127.0.0.1:{peer.dicom_port}" if how == "--to" else peer.dicomweb_url
        code, output = _send(str(outbox), how, target)
        assert code == 0, output
        assert not list(outbox.iterdir())
        assert len(peer.studies()) == len(studies)  # no new study
        for path in srs:
            sr = pydicom.dcmread(path)
            study = _study_of(peer, str(sr.StudyInstanceUID))
            [found] = peer.request(
                "POST",
                "/tools/find",
                json.dumps(
                    {"Level": "Instance", "Query": {"SOPInstanceUID": sr.SOPInstanceUID}}
                ).encode(),
                "application/json",
            )
            held = peer.rest(f"/instances/{found}")
            assert peer.rest(f"/series/{held['ParentSeries']}")["ParentStudy"] == study["ID"]
            stored = pydicom.dcmread(BytesIO(_file_of(peer, found)), force=True)
            assert stored == sr  # the SR's content, element for element
            if how == "--dicomweb":  # STOW-RS posts the file itself: Orthanc keeps its bytes
                assert _file_of(peer, found) == path.read_bytes()


def _file_of(peer: object, instance: str) -> bytes:
    import urllib.request

    url = f"{peer.http_url}/instances/{instance}/file"  # type: ignore[attr-defined]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=60) as answer:
        return bytes(answer.read())


def test_stow_to_the_recorded_url_with_a_token_from_the_environment(
    srs: list[Path], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/dicom-web"
    for path in srs:
        shutil.copyfile(path, tmp_path / path.name)
    code, output = _send(str(tmp_path), "--dicomweb", url)
    outbox = tmp_path / "outbox"
    assert code == 1 and "no connection to the STOW-RS service" in output
    reason = read_reason(entries(outbox)[0])
    assert reason is not None and reason.destination == url
    with StowService("stored", port=port) as service:
        code, output = _send(str(outbox), env={"USDCM_DICOMWEB_TOKEN": "tok-123"})
    assert code == 0, output
    assert service.authorizations == ["Bearer tok-123"] * len(srs)
    assert "tok-123" not in output
    assert sorted(service.parts) == sorted(p.read_bytes() for p in srs)
    assert not entries(outbox)


def test_over_tls_and_never_in_the_clear_instead(
    srs: list[Path], certs: Certificates, tmp_path: Path
) -> None:
    from tests.network.test_listen import listening

    for path in srs:
        shutil.copyfile(path, tmp_path / path.name)
    dead = f"USDCM@127.0.0.1:{free_port()}"
    code, _ = _send(str(tmp_path), "--to", dead, "--tls-ca", str(certs.ca))
    outbox = tmp_path / "outbox"
    assert code == 1
    assert all(read_reason(p).tls for p in entries(outbox))  # type: ignore[union-attr]
    code, output = _send(str(outbox))  # the recorded destination was TLS: no plain resend
    assert code == 2 and "over TLS: give --tls-ca FILE" in output
    assert len(output.strip().splitlines()) == 1
    tls_args = ("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key))
    with listening(tmp_path, *tls_args, "--modality", "SR", name="tls") as peer:
        to = f"USDCM@127.0.0.1:{peer.port}"
        code, output = _send(str(outbox), "--to", to, "--tls-ca", str(certs.other_ca))
        assert code == 1 and "TLS handshake with" in output and "--tls-ca the CA" in output
        code, output = _send(str(outbox), "--to", to, "--tls-ca", str(certs.ca))
        assert code == 0, output
    assert not list(outbox.iterdir())
    _same_instances(srs, sorted(peer.store.glob("*/*/*.dcm")))


def test_usage_errors_are_one_line_and_exit_2(srs: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "srs"
    folder.mkdir()
    shutil.copyfile(srs[0], folder / srs[0].name)
    (folder / "notes.txt").write_text("not DICOM")
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(folder)], "no destination recorded"),
        ([str(folder), "--to", "PACS@host"], "expected AET@host:port"),
        ([str(folder), "--to", "A@h:1", "--dicomweb", "http://h/dw"], "give one destination"),
        ([str(folder), "--dicomweb", "http://me:pw-secret@h/dw"], "never in the URL"),
        ([str(folder), "--to", "A@h:1", "--tls-ca", str(tmp_path / "none.pem")], "does not exist"),
        ([str(folder), "--to", "A@h:1", "--tls-cert", str(srs[0])], "TLS is turned on by"),
        ([str(folder / "notes.txt"), "--to", "A@h:1"], "not a DICOM Part 10 file"),
        ([str(folder), "--dicomweb", "http://h/dw", "--tls-ca", str(srs[0])], "does not load"),
    ]
    for args, message in cases:
        code, output = _send(*args)
        assert code == 2, (args, output)
        assert message in output and len(output.strip().splitlines()) == 1, output
        assert "pw-secret" not in output
    assert sorted(p.name for p in folder.iterdir()) == sorted([srs[0].name, "notes.txt"])


def test_a_plain_folder_skips_what_is_not_dicom_and_keeps_its_files(
    srs: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "srs"
    folder.mkdir()
    for path in srs:
        shutil.copyfile(path, folder / path.name)
    (folder / "study.predictions.csv").write_text("image_id\n")
    with _storescp(free_port(), tmp_path / "received") as destination:
        code, output = _send(str(folder), "--to", destination)
    assert code == 0, output
    assert f"sent {len(srs)}, still failing 0, 1 file skipped (not DICOM)" in output
    assert len(list(folder.glob("*.sr.dcm"))) == len(srs)  # a plain folder is not emptied
    assert not (folder / "outbox").exists()
    assert os.listdir(tmp_path / "received")
