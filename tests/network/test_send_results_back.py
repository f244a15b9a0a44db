"""classify_and_send(), as ``usdcm listen --predict`` calls it on a received study: one SR
for the study, sent to DCMTK's storescp; a pseudonymous predictions CSV beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from tests.evaluation.conftest import Evaluated, evaluated_run
from tests.network.test_send import storescp
from tests.results.test_sr import study_headers
from usdcm.network.results_back import classify_and_send

__all__ = ["evaluated_run", "storescp"]  # fixtures shared with other test modules


@pytest.fixture
def study_dir(evaluated_run: Evaluated, tmp_path: Path) -> tuple[Path, str]:
    """One study's US files of the evaluated export, in a folder as listen stores them."""
    export = evaluated_run.ingested.export.root
    studies = study_headers(evaluated_run.ingested.export)
    study_uid = max(studies, key=lambda uid: len(studies[uid]))
    folder = tmp_path / "store" / "0123abcd"
    folder.mkdir(parents=True)
    for index, path in enumerate(sorted(p for p in export.rglob("*") if p.is_file())):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # the export's junk files
            continue
        if header.get("StudyInstanceUID") == study_uid:
            shutil.copyfile(path, folder / f"{index}.dcm")
    return folder, study_uid


def test_classify_and_send_returns_the_study_sr_and_sends_it(
    evaluated_run: Evaluated,
    study_dir: tuple[Path, str],
    storescp: tuple[str, Path],
    tmp_path: Path,
) -> None:
    folder, study_uid = study_dir
    destination, received = storescp
    srs = classify_and_send(
        folder,
        evaluated_run.run,
        sr_out=tmp_path / "sr",
        dimse=destination,
        dicomweb=None,
        outbox=tmp_path / "outbox",
    )
    assert len(srs) == 1 and srs[0].parent == tmp_path / "sr"
    sr = pydicom.dcmread(srs[0])
    assert sr.StudyInstanceUID == study_uid and sr.Modality == "SR"
    [arrived] = [pydicom.dcmread(p) for p in received.iterdir()]
    assert arrived.SOPInstanceUID == sr.SOPInstanceUID
    predictions = (tmp_path / "sr" / f"{folder.name}.predictions.csv").read_text()
    assert study_uid not in predictions and str(sr.PatientName) not in predictions
    assert not (tmp_path / "outbox").exists()


def test_classify_and_send_without_a_destination_only_writes(
    evaluated_run: Evaluated, study_dir: tuple[Path, str], tmp_path: Path
) -> None:
    folder, _ = study_dir
    srs = classify_and_send(
        folder,
        evaluated_run.run,
        sr_out=tmp_path / "sr",
        dimse=None,
        dicomweb=None,
        outbox=tmp_path / "outbox",
    )
    assert [p.suffixes for p in srs] == [[".sr", ".dcm"]]
