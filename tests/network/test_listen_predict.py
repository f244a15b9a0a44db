"""Orthanc sends a study to ``usdcm listen --predict RUN --send``, and the SR comes back into
the original study (the whole loop of issue 11, on loopback, with real peers)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pydicom
import pytest

from tests.evaluation.conftest import Evaluated, evaluated_run  # noqa: F401
from tests.network.test_listen import listening
from tests.peers import PeerError, orthanc


def test_orthanc_to_listen_predict_sends_the_sr_back_into_the_study(
    evaluated_run: Evaluated,  # noqa: F811
    tmp_path: Path,
) -> None:
    with orthanc(tmp_path / "orthanc") as peer:
        for path in sorted(p for p in evaluated_run.ingested.export.root.rglob("*") if p.is_file()):
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # the export's junk files
                continue
            if header.get("Modality") == "US":
                with contextlib.suppress(PeerError):  # its deliberately damaged files
                    peer.upload(path)
        before = peer.studies()
        study = before[0]
        args = ["--quiet", "1s", "--predict", str(evaluated_run.run)]
        args += ["--send", f"{peer.aet}@127.0.0.1:{peer.dicom_port}"]
        args += ["--allow-ae", peer.aet]
        with listening(tmp_path, *args) as listener:
            peer.add_modality("usdcm", aet="USDCM", port=listener.port)
            peer.store_to("usdcm", study["ID"])
            deadline = time.monotonic() + 180
            done = ("classified in", "predict on study")
            while not any(text in listener.log_text() for text in done):
                if time.monotonic() > deadline:
                    pytest.fail(f"no classification in time:\n{listener.log_text()}")
                time.sleep(0.2)
        log = listener.log_text()
        assert "classified in" in log, log
        after = peer.studies()
        assert len(after) == len(before)  # the SR joined the study, no new study
        series = [peer.rest(f"/series/{s}") for s in peer.rest(f"/studies/{study['ID']}")["Series"]]
        modalities = [s["MainDicomTags"].get("Modality") for s in series]
        assert modalities.count("SR") == 1, modalities
    assert study["MainDicomTags"]["StudyInstanceUID"] not in log
