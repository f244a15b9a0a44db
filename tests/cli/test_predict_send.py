"""``usdcm predict --sr-out --send / --send-dicomweb``: the study SRs go back to Orthanc and
land inside their original studies; a dead peer leaves them in the outbox and exits 2; the
predictions CSV and file names stay pseudonymous; ``--tls-ca`` sends over TLS, and a TLS
mistake stops predict before the model runs."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import pydicom
import pytest
from tests.evaluation.conftest import Evaluated
from tests.network.test_send_tls import Certificates, certs
from tests.peers import Orthanc, PeerError, free_port, orthanc
from typer.testing import CliRunner

from usdcm.cli.app import app

__all__ = ["certs"]  # a fixture shared from the network tests


def _predict(evaluated_run: Evaluated, tmp_path: Path, *extra: str) -> tuple[int, str]:
    args = [
        "predict",
        str(evaluated_run.run),
        str(evaluated_run.ingested.export.root),
        "--out",
        str(tmp_path / "predictions.csv"),
        "--sr-out",
        str(tmp_path / "sr"),
        "--device",
        "cpu",
        "--workers",
        "1",
        "--quiet",
        *extra,
    ]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def _upload_us_images(peer: Orthanc, export: Path) -> set[str]:
    """Upload the export's US images; their StudyInstanceUIDs."""
    studies = set()
    for path in sorted(p for p in export.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # the export's junk files
            continue
        if header.get("Modality") == "US":
            with contextlib.suppress(PeerError):  # the export's deliberately damaged files
                peer.upload(path)
                studies.add(str(header.StudyInstanceUID))
    return studies


@pytest.mark.parametrize("how", ["--send", "--send-dicomweb"])
def test_predict_sends_one_sr_per_study_into_the_original_studies(
    how: str, evaluated_run: Evaluated, tmp_path: Path
) -> None:
    with orthanc(tmp_path / "orthanc") as peer:
        studies = _upload_us_images(peer, evaluated_run.ingested.export.root)
        target = f"{peer.aet}@127.0.0.1:{peer.dicom_port}" if how == "--send" else peer.dicomweb_url
        code, output = _predict(evaluated_run, tmp_path, how, target)
        assert code == 0, output
        srs = sorted((tmp_path / "sr").glob("*.sr.dcm"))
        assert f"{len(srs)} SRs sent to" in output
        held = peer.studies()
        assert {s["MainDicomTags"]["StudyInstanceUID"] for s in held} == studies  # none new
        for study in held:
            modalities = [
                peer.rest(f"/series/{series}")["MainDicomTags"]["Modality"]
                for series in study["Series"]
            ]
            assert modalities.count("SR") == 1
    with (tmp_path / "predictions.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len({row["study_key"] for row in rows}) == len(srs) == len(studies)
    names = {sr.name.removesuffix(".sr.dcm") for sr in srs}
    assert names == {row["study_key"] for row in rows}  # files named by keyed hashes
    text = (tmp_path / "predictions.csv").read_text(encoding="utf-8")
    for sr in srs:
        dataset = pydicom.dcmread(sr)
        assert dataset.StudyInstanceUID not in text and str(dataset.PatientName) not in text


def test_predict_to_a_dead_peer_keeps_the_srs_in_the_outbox(
    evaluated_run: Evaluated, tmp_path: Path
) -> None:
    code, output = _predict(evaluated_run, tmp_path, "--send", f"PACS@127.0.0.1:{free_port()}")
    assert code == 2
    assert "SRs not sent, kept in" in output and "peer unreachable" in output
    assert "Traceback" not in output
    kept = sorted((tmp_path / "sr" / "outbox").glob("*.sr.dcm"))
    assert [p.name for p in kept] == sorted(p.name for p in (tmp_path / "sr").glob("*.sr.dcm"))


def test_send_needs_sr_out(evaluated_run: Evaluated, tmp_path: Path) -> None:
    args = ["predict", str(evaluated_run.run), str(tmp_path), "--out", str(tmp_path / "p.csv")]
    result = CliRunner().invoke(app, [*args, "--send", "PACS@127.0.0.1:104"])
    assert result.exit_code == 2 and "add --sr-out" in result.output


def test_predict_sends_over_tls(
    evaluated_run: Evaluated, certs: Certificates, tmp_path: Path
) -> None:
    from tests.network.test_listen import listening

    tls_args = ("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key))
    with listening(tmp_path, *tls_args, "--modality", "SR", name="tls") as peer:
        target = f"USDCM@127.0.0.1:{peer.port}"
        code, output = _predict(
            evaluated_run, tmp_path, "--send", target, "--tls-ca", str(certs.ca)
        )
        assert code == 0, output
    srs = sorted((tmp_path / "sr").glob("*.sr.dcm"))
    assert srs and f"{len(srs)} SRs sent to {target}" in output
    arrived = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, peer.store.glob("*/*/*.dcm"))}
    assert {str(pydicom.dcmread(p).SOPInstanceUID) for p in srs} == set(arrived)


def test_tls_mistakes_stop_predict_before_the_model_runs(
    evaluated_run: Evaluated, certs: Certificates, tmp_path: Path
) -> None:
    send = ("--send", "PACS@127.0.0.1:104")
    cases = [
        ((*send, "--tls-ca", str(tmp_path / "none.pem")), "does not exist"),
        (
            (*send, "--tls-ca", str(certs.ca), "--tls-key", str(certs.client_key)),
            "needs --tls-cert",
        ),
        (("--tls-ca", str(certs.ca)), "add --send or --send-dicomweb"),
        (("--send-dicomweb", "http://h/dw", "--tls-ca", str(certs.ca)), "https://"),
        (("--send", "PACS@h"), "expected AET@host:port"),
    ]
    for args, message in cases:
        code, output = _predict(evaluated_run, tmp_path, *args)
        assert code == 2 and message in output, output
        assert len(output.strip().splitlines()) == 1 and "Traceback" not in output
        assert not (tmp_path / "predictions.csv").exists()  # nothing ran
