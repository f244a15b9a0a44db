"""The validation report as a DICOM Encapsulated PDF: the PDF bytes unchanged, a study of its
own under a placeholder patient, the evaluated studies and images referenced; DCMTK reads it
and Orthanc files it; ``usdcm report --pdf --dicom-pdf`` writes it."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from tests.evaluation.conftest import Evaluated, evaluated_run
from tests.peers import orthanc, require
from tests.report.test_pdf import require_chromium
from usdcm.errors import ResultsError
from usdcm.network.send import send_files
from usdcm.results.pdf import (
    REPORT_PATIENT_ID,
    STUDY_REFERENCE_CLASS,
    EvaluatedImage,
    encapsulated_pdf,
    sop_class_uid,
)
from usdcm.results.sr import dataset_bytes

__all__ = ["evaluated_run"]  # the session fixture, shared with the evaluation tests

PDF = b"%PDF-1.4\n% a tiny odd-length stand-in for the report\n%%EOF\n"
IMAGES = [
    EvaluatedImage("1.2.840.10008.5.1.4.1.1.6.1", "1.2.3.1", "1.2.3"),
    EvaluatedImage("1.2.840.10008.5.1.4.1.1.3.1", "1.2.3.2", "1.2.3"),
    EvaluatedImage("1.2.840.10008.5.1.4.1.1.6.1", "1.2.4.1", "1.2.4"),
]


def test_the_pdf_is_encapsulated_unchanged_with_its_references(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf.dcm"
    path.write_bytes(
        dataset_bytes(encapsulated_pdf(PDF, title="t", images=IMAGES, software_version="1"))
    )
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.EncapsulatedPDFStorage
    document = bytes(ds.EncapsulatedDocument)
    assert len(PDF) % 2 == 1 and document[: ds.EncapsulatedDocumentLength] == PDF
    assert ds.PatientID == REPORT_PATIENT_ID and ds.Modality == "DOC"
    assert ds.StudyInstanceUID not in {image.study_instance_uid for image in IMAGES}
    assert [
        (i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in ds.ReferencedStudySequence
    ] == [
        (STUDY_REFERENCE_CLASS, "1.2.3"),
        (STUDY_REFERENCE_CLASS, "1.2.4"),
    ]
    assert {i.ReferencedSOPInstanceUID for i in ds.SourceInstanceSequence} == {
        image.sop_instance_uid for image in IMAGES
    }
    assert "RESEARCH USE" in ds.SeriesDescription
    again = encapsulated_pdf(PDF, title="t", images=IMAGES, software_version="1")
    assert again.SOPInstanceUID == ds.SOPInstanceUID  # the same report is the same instance
    with pytest.raises(ResultsError, match="not a PDF"):
        encapsulated_pdf(b"<html>", title="t", images=[], software_version="1")


def test_dcmtk_reads_it_and_orthanc_files_it(tmp_path: Path) -> None:
    dcmdump = require("dcmdump", "dcmtk")
    path = tmp_path / "report.pdf.dcm"
    path.write_bytes(
        dataset_bytes(encapsulated_pdf(PDF, title="t", images=IMAGES, software_version="1"))
    )
    done = subprocess.run([dcmdump, "-dc", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "EncapsulatedPDFStorage" in done.stdout, done.stderr
    with orthanc(tmp_path / "orthanc") as peer:
        result = send_files(
            [path], dimse=f"{peer.aet}@127.0.0.1:{peer.dicom_port}", outbox=tmp_path / "out"
        )
        assert result.ok, result.failed
        [instance] = peer.rest("/instances")
        stored = peer.rest(f"/instances/{instance}/simplified-tags")
        assert stored["MIMETypeOfEncapsulatedDocument"] == "application/pdf"


def test_report_dicom_pdf_references_the_evaluated_images(
    evaluated_run: Evaluated, tmp_path: Path
) -> None:
    from usdcm.cli.app import app

    require_chromium()
    out = tmp_path / "report"
    args = ["report", str(evaluated_run.predictions), "--out", str(out), "--bootstrap", "20"]
    result = CliRunner().invoke(app, [*args, "--pdf", "--dicom-pdf"])
    assert result.exit_code == 0, result.output
    ds = pydicom.dcmread(out / "report.pdf.dcm")
    pdf = (out / "report.pdf").read_bytes()
    assert bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength] == pdf
    with evaluated_run.predictions.open(encoding="utf-8") as handle:
        test_ids = {row["image_id"] for row in csv.DictReader(handle) if row["split"] == "test"}
    manifest = {row["image_id"]: row for row in evaluated_run.ingested.rows}
    assert {
        (i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in ds.SourceInstanceSequence
    } == {(sop_class_uid(manifest[i]["sop_class"]), manifest[i]["sop_uid"]) for i in test_ids}
    assert all(i.ReferencedSOPClassUID.startswith("1.2.840.") for i in ds.SourceInstanceSequence)
    assert {i.ReferencedSOPInstanceUID for i in ds.ReferencedStudySequence} == {
        manifest[image_id]["study_uid"] for image_id in test_ids
    }
    refused = CliRunner().invoke(app, [*args, "--dicom-pdf"])
    assert refused.exit_code == 2 and "add --pdf" in refused.output
