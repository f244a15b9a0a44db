"""``usdcm listen`` against real DCMTK peers on loopback: echoscu, dcmsend, kill -9, --allow-ae,
concurrent senders, the quiet timer with --ingest, TLS and SIGTERM.

Each test starts ``python -m usdcm listen`` as a child process on a free port and stops it
with SIGTERM, which must exit 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.peers import free_port, require
from usdcm.dicom.sop import US_IMAGE_STORAGE
from usdcm.network.store import ExportStore
from usdcm.synth.export import ExportSummary, write_export

START_TIMEOUT_S = 30.0


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    store: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def listening(tmp_path: Path, *args: str, name: str = "listen") -> Iterator[Running]:
    """Start ``usdcm listen`` on a free port; SIGTERM it on exit and check it exits 0."""
    store = tmp_path / f"{name}-store"
    log = tmp_path / f"{name}.log"
    port = free_port()
    command = [sys.executable, "-m", "usdcm", "listen", "--store", str(store)]
    command += ["--port", str(port), "--no-status", *args]
    with log.open("ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    running = Running(process, port, store, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "listening on" not in running.log_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"usdcm listen did not start:\n{running.log_text()}")
            time.sleep(0.05)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail("usdcm listen did not stop within 60 s of SIGTERM")
    if process.returncode != -signal.SIGKILL:
        assert process.returncode == 0, running.log_text()


def _dcmsend(port: int, *paths: Path, aet: str = "DCMSEND") -> subprocess.CompletedProcess[str]:
    binary = require("dcmsend", "dcmtk")
    command = [binary, "+sd", "+r", "-nh", "+f", "-dn", "-aet", aet, "-aec", "USDCM"]
    command += ["127.0.0.1", str(port), *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)


def _stored(store: Path) -> list[Path]:
    return sorted(store.glob("*/*/*.dcm"))


def _wait_for(condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def mixed_export(tmp_path_factory: pytest.TempPathFactory) -> ExportSummary:
    """A synth export with every storage recipe (JPEG, RLE, JPEG 2000 cine...) and its junk."""
    root = tmp_path_factory.mktemp("mixed") / "export"
    return write_export(root, patients=5, seed=1, frames=3)


def _tiny_instances(folder: Path, count: int, *, studies: int = 2, seed: int = 0) -> list[Path]:
    """``count`` small US images (16x16, Explicit VR LE) over ``studies`` studies."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    study_uids = [generate_uid() for _ in range(studies)]
    series_uids = [generate_uid() for _ in range(studies)]
    paths = []
    for index in range(count):
        ds = Dataset()
        ds.SOPClassUID = US_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study_uids[index % studies]
        ds.SeriesInstanceUID = series_uids[index % studies]
        ds.PatientID = "ZZTINY"
        ds.Modality = "US"
        ds.Rows, ds.Columns = 16, 16
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation = 0
        ds.PixelData = rng.integers(0, 255, (16, 16), dtype=np.uint8).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{index:05d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_echoscu_verification(tmp_path: Path) -> None:
    echoscu = require("echoscu", "dcmtk")
    with listening(tmp_path) as peer:
        result = subprocess.run(
            [echoscu, "-aec", "USDCM", "127.0.0.1", str(peer.port)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert "association accepted from ECHOSCU" in peer.log_text()


def test_dcmsend_mixed_export_each_instance_once_byte_identical(
    tmp_path: Path, mixed_export: ExportSummary
) -> None:
    syntaxes = {record.transfer_syntax_uid for record in mixed_export.images}
    assert {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"} <= syntaxes
    with listening(tmp_path) as peer:
        result = _dcmsend(peer.port, mixed_export.root)
    assert "No presentation context" not in result.stderr  # every storage class is accepted
    # files in a syntax this DCMTK does not know (JPEG XL before 3.6.9) never leave dcmsend
    unknown = {
        Path(line.split(": ")[2])
        for line in result.stderr.splitlines()
        if line.startswith("W: bad DICOM file:") and "Unknown Transfer Syntax" in line
    }
    sent = [record for record in mixed_export.images if record.path not in unknown]
    assert len(sent) >= len(mixed_export.images) - 3, unknown
    store = ExportStore(peer.store)
    stored = _stored(peer.store)
    assert len(stored) == len(sent)  # every image sent, once
    # the SR, CT and secondary capture: acknowledged, set aside in .usdcm/other
    aside = sorted((peer.store / ".usdcm" / "other").glob("*/*/*.dcm"))
    classes = {str(pydicom.dcmread(path).SOPClassUID.name) for path in aside}
    assert len(aside) == 3, classes
    assert {"Basic Text SR Storage", "CT Image Storage"} <= classes
    for record in sent:
        original = pydicom.dcmread(record.path, force=True)
        keys = store.keys(
            study_uid=original.StudyInstanceUID,
            series_uid=original.SeriesInstanceUID,
            sop_uid=original.SOPInstanceUID,
        )
        received = pydicom.dcmread(store.path_of(keys))
        if record.part10:  # sent in its own syntax (dcmsend -dn)
            assert received.file_meta.TransferSyntaxUID == record.transfer_syntax_uid
        else:  # a bare data set: dcmsend reads it as Implicit VR LE, may send it explicit
            assert not received.file_meta.TransferSyntaxUID.is_compressed
        assert received.PixelData == original.PixelData, record.recipe
        assert received.SOPInstanceUID == record.sop_instance_uid
    duplicates = store.duplicates()
    twice = 0 if mixed_export.junk["duplicate"] in unknown else 1  # unless never sent
    assert len(duplicates) == twice and all(d["identical"] is True for d in duplicates)
    assert all(d["calling_ae"] == "DCMSEND" for d in duplicates)
    # no UID in a file or folder name, and none (nor any fake PHI) in the log
    uids = {r.sop_instance_uid for r in mixed_export.images}
    names = {part for path in peer.store.rglob("*") for part in path.relative_to(peer.store).parts}
    assert not any(uid in name for uid in uids for name in names)
    log = peer.log_text()
    assert not any(uid in log for uid in uids)
    assert not any(token in log for token in mixed_export.phi if len(token) > 3)
    assert ("duplicate instance in study" in log) == bool(twice)
    assert f"{len(sent)} stored, {twice} duplicates, 0 failed, 3 set aside" in log


def test_allow_ae_rejects_other_calling_ae_titles(tmp_path: Path) -> None:
    echoscu = require("echoscu", "dcmtk")
    with listening(tmp_path, "--allow-ae", "SCANNER1,PACS") as peer:

        def echo(aet: str) -> int:
            command = [echoscu, "-aet", aet, "-aec", "USDCM", "127.0.0.1", str(peer.port)]
            return subprocess.run(command, capture_output=True, check=False).returncode

        assert echo("INTRUDER") != 0
        assert echo("PACS") == 0
        assert echo("SCANNER1") == 0
    log = peer.log_text()
    assert "association rejected from INTRUDER" in log
    assert "association accepted from PACS" in log


def test_kill9_mid_association_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    from pynetdicom import AE

    paths = _tiny_instances(tmp_path / "tiny", 120, studies=3)
    acknowledged: list[Path] = []
    with listening(tmp_path) as peer:
        ae = AE(ae_title="KILLTEST")
        ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 5
        ae.add_requested_context(US_IMAGE_STORAGE, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", peer.port, ae_title="USDCM")
        assert assoc.is_established

        def send_all() -> None:
            for path in paths:
                try:
                    status = assoc.send_c_store(path)
                except (RuntimeError, OSError, ValueError):
                    return
                if status and status.Status == 0x0000:
                    acknowledged.append(path)
                if not assoc.is_established:
                    return

        sender = threading.Thread(target=send_all)
        sender.start()
        _wait_for(lambda: len(acknowledged) >= 20, 60, "20 acknowledged instances")
        os.kill(peer.process.pid, signal.SIGKILL)  # mid-association, no warning
        peer.process.wait()
        sender.join(timeout=60)
        assoc.abort()
    assert 20 <= len(acknowledged) < len(paths)
    store = ExportStore(peer.store)
    for path in acknowledged:
        original = pydicom.dcmread(path)
        keys = store.keys(
            study_uid=original.StudyInstanceUID,
            series_uid=original.SeriesInstanceUID,
            sop_uid=original.SOPInstanceUID,
        )
        received = pydicom.dcmread(store.path_of(keys))
        assert received.PixelData == original.PixelData
    # a restart on the same store clears the spool and re-arms the pending studies
    with listening(tmp_path, "--quiet", "500ms", name="listen") as again:
        _wait_for(lambda: "complete" in again.log_text(), 30, "the re-armed studies")
    assert "pending from an earlier run" in again.log_text()
    assert not any((again.store / ".usdcm" / "incoming").iterdir())


def test_four_concurrent_dcmsend_of_200_each_stored_once(tmp_path: Path) -> None:
    folders = [tmp_path / f"sender{n}" for n in range(4)]
    for n, folder in enumerate(folders):
        _tiny_instances(folder, 200, studies=2, seed=n)
    with listening(tmp_path, "--max-associations", "8") as peer:
        results: list[subprocess.CompletedProcess[str]] = []

        def send(folder: Path) -> None:
            results.append(_dcmsend(peer.port, folder, aet=folder.name.upper()))

        threads = [threading.Thread(target=send, args=(folder,)) for folder in folders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "Failed" not in result.stdout + result.stderr
    assert len(_stored(peer.store)) == 800
    assert ExportStore(peer.store).duplicates() == []
    log = peer.log_text()
    assert log.count("200 stored, 0 duplicates, 0 failed") == 4


def test_quiet_timer_groups_associations_and_fires_ingest(
    tmp_path: Path, mixed_export: ExportSummary
) -> None:
    data = tmp_path / "data"
    study = sorted(p for p in mixed_export.root.iterdir() if p.name.startswith("PT"))[0]
    series = sorted(p for p in study.rglob("SE*") if p.is_dir())
    assert len(series) >= 2
    with listening(tmp_path, "--quiet", "1.5s", "--ingest", str(data)) as peer:
        for folder in series:  # one association per series, well inside the quiet time
            assert _dcmsend(peer.port, folder).returncode == 0
        _wait_for(lambda: (data / "manifest.csv").is_file(), 120, "ingest's manifest.csv")
        _wait_for(lambda: "ingested study" in peer.log_text(), 30, "the ingest log line")
    log = peer.log_text()
    assert log.count(" complete (") == 1  # the study completed once, across associations
    manifest = (data / "manifest.csv").read_text()
    stored = _stored(peer.store)
    assert stored
    assert all(path.relative_to(peer.store).as_posix() in manifest for path in stored)


def test_tls_only_with_a_certificate(tmp_path: Path) -> None:
    openssl = require("openssl", "openssl")
    echoscu = require("echoscu", "dcmtk")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        check=True,
    )
    args = ("--tls-cert", str(cert), "--tls-key", str(key))
    with listening(tmp_path, *args) as peer:
        base = [echoscu, "-aec", "USDCM"]
        tls = subprocess.run(
            [*base, "+tla", "-ic", "127.0.0.1", str(peer.port)], capture_output=True, check=False
        )
        plain = subprocess.run(
            [*base, "-to", "5", "-ta", "5", "127.0.0.1", str(peer.port)],
            capture_output=True,
            check=False,
        )
    assert tls.returncode == 0, tls.stderr
    assert plain.returncode != 0
    assert "TLS, " in peer.log_text()


def test_bad_options_fail_with_one_line(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "usdcm", "listen", "--store", str(tmp_path / "s")]
    bad_quiet = subprocess.run([*base, "--quiet", "soon"], capture_output=True, text=True)
    assert bad_quiet.returncode == 2
    assert "--quiet is 'soon'" in bad_quiet.stderr and "Traceback" not in bad_quiet.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = subprocess.run([*base, "--port", port], capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr
    modality = subprocess.run([*base, "--modality", "XX"], capture_output=True, text=True)
    assert modality.returncode == 2 and "--modality XX is not known" in modality.stderr


def test_modality_sr_accepts_structured_reports(
    tmp_path: Path, mixed_export: ExportSummary
) -> None:
    with listening(tmp_path, "--modality", "SR,CT") as peer:
        _dcmsend(peer.port, mixed_export.junk["sr"], mixed_export.junk["non_us"])
    assert len(_stored(peer.store)) == 2
    pending = json.loads((peer.store / ".usdcm" / "pending.json").read_text())
    assert len(pending["pending"]) >= 1  # SIGTERM before the quiet time: kept for next start


def test_sigterm_lets_the_open_association_finish_and_exits_0(tmp_path: Path) -> None:
    from pynetdicom import AE

    paths = _tiny_instances(tmp_path / "tiny", 60, studies=1)
    statuses: list[int] = []
    with listening(tmp_path, "--grace", "60s") as peer:
        ae = AE(ae_title="DRAIN")
        ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 10
        ae.add_requested_context(US_IMAGE_STORAGE, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", peer.port, ae_title="USDCM")
        assert assoc.is_established
        for index, path in enumerate(paths):
            if index == 10:
                peer.process.send_signal(signal.SIGTERM)  # mid-association
                _wait_for(lambda: "stopped accepting" in peer.log_text(), 30, "the shutdown")
            status = assoc.send_c_store(path)
            statuses.append(int(status.Status) if status else -1)
        assoc.release()
        assert peer.process.wait(timeout=60) == 0
        refused = subprocess.run(  # no new association once stopping
            [require("echoscu", "dcmtk"), "127.0.0.1", str(peer.port)], capture_output=True
        )
    assert statuses == [0] * len(paths)
    assert len(_stored(peer.store)) == len(paths)
    assert refused.returncode != 0
    pending = json.loads((peer.store / ".usdcm" / "pending.json").read_text())
    assert len(pending["pending"]) == 1  # completed by the next start's timer


def test_connections_that_never_ask_for_an_association_do_not_hold_the_shutdown(
    tmp_path: Path,
) -> None:
    # a port check (closed at once) and a silent client (left open): pynetdicom keeps a
    # thread for each until the ACSE timeout (30 s); SIGTERM must not wait for them
    with listening(tmp_path) as peer:
        socket.create_connection(("127.0.0.1", peer.port), timeout=5).close()
        silent = socket.create_connection(("127.0.0.1", peer.port), timeout=5)
        time.sleep(0.3)  # both accepted: their threads are waiting for a request
        started = time.monotonic()
        peer.process.send_signal(signal.SIGTERM)
        assert peer.process.wait(timeout=20) == 0, peer.log_text()
        took = time.monotonic() - started
        silent.close()
    assert took < 10, f"the shutdown took {took:.1f} s"
    assert "still open after the grace time" not in peer.log_text()


def test_max_associations_refuses_one_more(tmp_path: Path) -> None:
    from pynetdicom import AE

    echoscu = require("echoscu", "dcmtk")
    with listening(tmp_path, "--max-associations", "1") as peer:
        ae = AE(ae_title="HOLDER")
        ae.acse_timeout = 10
        ae.add_requested_context("1.2.840.10008.1.1")
        held = ae.associate("127.0.0.1", peer.port, ae_title="USDCM")
        assert held.is_established
        command = [echoscu, "-aec", "USDCM", "127.0.0.1", str(peer.port)]
        second = subprocess.run(command, capture_output=True, check=False)
        held.release()
        _wait_for(lambda: "HOLDER released" in peer.log_text(), 30, "the release")
        third = subprocess.run(command, capture_output=True, check=False)
    assert second.returncode != 0
    assert third.returncode == 0


def test_a_second_listener_on_the_same_store_is_refused(tmp_path: Path) -> None:
    with listening(tmp_path) as peer:
        command = [sys.executable, "-m", "usdcm", "listen", "--store", str(peer.store)]
        command += ["--port", str(free_port())]
        second = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert "Another usdcm listen is using the store" in second.stderr


def test_every_decodable_syntax_dcmtk_writes_is_stored_as_sent(tmp_path: Path) -> None:
    """Deflated, JPEG lossless (SV1 and process 14), JPEG baseline, JPEG-LS and RLE files,
    each sent in its own syntax, are stored in it with the same Pixel Data bytes."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    tools = {
        "jpeg-sv1": [require("dcmcjpeg", "dcmtk")],
        "jpeg-p14": [require("dcmcjpeg", "dcmtk"), "+el"],
        "jpeg-baseline": [require("dcmcjpeg", "dcmtk"), "+eb"],
        "jpeg-ls": [require("dcmcjpls", "dcmtk")],
        "jpeg-ls-near": [require("dcmcjpls", "dcmtk"), "+en"],
        "rle": [require("dcmcrle", "dcmtk")],
    }
    sources = _tiny_instances(tmp_path / "plain", len(tools) + 1, studies=1)
    outgoing = tmp_path / "outgoing"
    outgoing.mkdir()
    for (name, command), source in zip(tools.items(), sources, strict=False):
        subprocess.run([*command, str(source), str(outgoing / name)], check=True)
    deflated = pydicom.dcmread(sources[-1])
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(outgoing / "deflated", enforce_file_format=True)
    sent = {path.name: pydicom.dcmread(path) for path in outgoing.iterdir()}
    assert len({str(ds.file_meta.TransferSyntaxUID) for ds in sent.values()}) == len(sent)
    with listening(tmp_path) as peer:
        result = _dcmsend(peer.port, outgoing)
        assert result.returncode == 0, result.stderr
    store = ExportStore(peer.store)
    for name, original in sent.items():
        keys = store.keys(
            study_uid=original.StudyInstanceUID,
            series_uid=original.SeriesInstanceUID,
            sop_uid=original.SOPInstanceUID,
        )
        received = pydicom.dcmread(store.path_of(keys))
        assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID, name
        assert received.PixelData == original.PixelData, name


def test_jpeg_xl_and_video_cine_are_accepted_and_stored_as_sent(
    tmp_path: Path, mixed_export: ExportSummary
) -> None:
    # syntaxes pydicom cannot decode but usdcm can (imagecodecs, PyAV): a scanner's JPEG XL
    # or H.264 cine must be received, not refused at association time
    from usdcm.network.send import send_files
    from usdcm.synth.codecs import transcode

    sources = [record.path for record in mixed_export.images if record.photometric == "MONOCHROME2"]
    files = []
    # one source image per syntax: each file keeps its own SOP instance UID
    syntaxes = ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.102")
    for source, syntax in zip(sources[:2], syntaxes, strict=True):
        path = tmp_path / f"{syntax}.dcm"
        path.write_bytes(transcode((mixed_export.root / source).read_bytes(), syntax))
        files.append(path)
    with listening(tmp_path) as running:
        result = send_files(files, dimse=f"USDCM@127.0.0.1:{running.port}", outbox=tmp_path / "out")
        assert result.ok, result.failed
        stored = _stored(running.store)

    # stored as received, never transcoded: the same syntax and the same encapsulated bytes
    def content(paths: list[Path]) -> list[tuple[str, bytes]]:
        read = [pydicom.dcmread(path) for path in paths]
        return sorted((str(d.file_meta.TransferSyntaxUID), d.PixelData) for d in read)

    assert content(stored) == content(files)
    assert {syntax for syntax, _ in content(stored)} == set(syntaxes)
