"""``usdcm listen --predict RUN --send ... --send-tls-ca``: the SR of a study received in the
clear goes back over TLS, to a second ``usdcm listen`` that accepts TLS only."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from tests.evaluation.conftest import Evaluated, evaluated_run  # noqa: F401
from tests.network.test_listen import _dcmsend, listening
from tests.network.test_send_tls import Certificates, certs

__all__ = ["certs"]  # fixture shared from test_send_tls


def _us_files(root: Path) -> list[Path]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # the export's junk files
            continue
        if header.get("Modality") == "US" and header.get("StudyInstanceUID"):
            found.append(path)
    return found


def test_listen_sends_its_results_over_tls(
    evaluated_run: Evaluated,  # noqa: F811
    certs: Certificates,
    tmp_path: Path,
) -> None:
    files = _us_files(evaluated_run.ingested.export.root)
    study = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    one_study = [
        p for p in files if pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID == study
    ]
    tls_peer = ("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key))
    with listening(tmp_path, *tls_peer, "--modality", "SR", name="pacs") as pacs:
        args = ["--quiet", "1s", "--predict", str(evaluated_run.run)]
        args += ["--send", f"USDCM@127.0.0.1:{pacs.port}", "--send-tls-ca", str(certs.ca)]
        with listening(tmp_path, *args, name="node") as node:
            sent = _dcmsend(node.port, *one_study)
            assert sent.returncode == 0, sent.stderr
            deadline = time.monotonic() + 180
            while not any(t in node.log_text() for t in ("classified in", "predict on study")):
                if time.monotonic() > deadline:
                    pytest.fail(f"no classification in time:\n{node.log_text()}")
                time.sleep(0.2)
        assert "classified in" in node.log_text(), node.log_text()
        assert "TLS" in pacs.log_text()
    received = [pydicom.dcmread(p) for p in sorted(pacs.store.glob("*/*/*.dcm"))]
    assert [ds.Modality for ds in received] == ["SR"]
    assert received[0].StudyInstanceUID == study  # into the original study
    assert not list((node.store / ".usdcm" / "outbox").glob("*.dcm"))


def test_send_tls_options_need_a_send(tmp_path: Path, certs: Certificates) -> None:
    command = [sys.executable, "-m", "usdcm", "listen", "--store", str(tmp_path / "s")]
    command += ["--send-tls-ca", str(certs.ca)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode != 0
    assert "secure the results' send: add --send or --send-dicomweb" in done.stderr
    assert "Traceback" not in done.stderr
