"""The TID 1500 SR of a study: DCMTK's dsrdump parses it, highdicom reads its content back,
and it sits in the original study with the source's patient module."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from highdicom.sr.utils import find_content_items
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from tests.peers import require
from usdcm.errors import ResultsError
from usdcm.privacy import ProjectSecret
from usdcm.results.sr import (
    PREDICTED_CLASS,
    PRIVATE_SCHEME,
    SERIES_DESCRIPTION,
    Algorithm,
    ImageResult,
    load_class_codes,
    study_sr,
    write_sr,
)
from usdcm.synth import ExportSummary

CLASSES = ["abnormal", "normal"]
ALGORITHM = Algorithm(version="9.9.9", run_id="r18", weights_sha256="ab" * 32)
SECRET = ProjectSecret(b"s" * 32)


def study_headers(export: ExportSummary) -> dict[str, list[Dataset]]:
    """The US image headers of the export (no pixel data), by StudyInstanceUID."""
    studies: dict[str, list[Dataset]] = {}
    seen: set[str] = set()
    for path in sorted(p for p in export.root.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # the export's junk files
            continue
        if header.get("Modality") != "US" or header.SOPInstanceUID in seen:
            continue
        seen.add(header.SOPInstanceUID)
        studies.setdefault(header.StudyInstanceUID, []).append(header)
    return studies


def report_of(path: Path) -> hd.sr.MeasurementReport:
    """The TID 1500 content of the SR file at ``path``, as highdicom reads it."""
    report = hd.sr.srread(path).content
    assert isinstance(report, hd.sr.MeasurementReport)
    return report


def results(headers: list[Dataset], abnormal: float = 0.8) -> list[ImageResult]:
    return [ImageResult(h, {"abnormal": abnormal, "normal": 1 - abnormal}) for h in headers]


@pytest.fixture(scope="module")
def one_study(synth_mix: ExportSummary) -> list[Dataset]:
    studies = study_headers(synth_mix)
    return max(studies.values(), key=len)


def test_the_sr_joins_the_original_study_with_its_patient_module(
    one_study: list[Dataset], tmp_path: Path
) -> None:
    source = one_study[0]
    path = write_sr(
        study_sr(results(one_study), classes=CLASSES, algorithm=ALGORITHM), tmp_path, SECRET
    )
    sr = pydicom.dcmread(path)
    for keyword in (
        "StudyInstanceUID",
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyDate",
    ):
        assert sr.get(keyword) == source.get(keyword), keyword
    assert sr.SeriesInstanceUID not in {h.SeriesInstanceUID for h in one_study}
    assert sr.SOPInstanceUID not in {h.SOPInstanceUID for h in one_study}
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert (sr.PreliminaryFlag, sr.VerificationFlag, sr.CompletionFlag) == (
        "PRELIMINARY",
        "UNVERIFIED",
        "PARTIAL",
    )
    assert "RESEARCH USE" in sr.SeriesDescription and sr.SeriesDescription == SERIES_DESCRIPTION
    # the file name is the study's keyed hash, never a UID or a name
    assert path.name == f"{SECRET.pseudonym(source.StudyInstanceUID, namespace='study')}.sr.dcm"
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {h.SOPInstanceUID for h in one_study}


def test_highdicom_reads_back_finding_probability_algorithm_and_observer(
    one_study: list[Dataset], tmp_path: Path
) -> None:
    path = write_sr(
        study_sr(results(one_study, 0.8), classes=CLASSES, algorithm=ALGORITHM), tmp_path, SECRET
    )
    sr = hd.sr.srread(path)
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    report = report_of(path)
    groups = report.get_image_measurement_groups()
    assert len(groups) == 1 + len(one_study)  # the study, then each image
    study = groups[0]
    assert study.finding_type is not None
    assert (study.finding_type.value, study.finding_type.scheme_designator) == (
        "abnormal",
        PRIVATE_SCHEME,
    )
    [evaluation] = study.get_qualitative_evaluations(name=PREDICTED_CLASS)
    assert evaluation.value == study.finding_type
    image_findings = [group.finding_type for group in groups[1:]]
    assert all(f is not None and f.value == "abnormal" for f in image_findings)
    probability = study.get_measurements(name=codes.DCM.Probability)
    assert [item.value for item in probability] == [pytest.approx(0.8)]
    assert {image.referenced_sop_instance_uid for image in study.source_images} == {
        h.SOPInstanceUID for h in one_study
    }
    algorithm = {
        name: [item.value for item in find_content_items(study[0], name=code)]
        for name, code in [
            ("name", codes.DCM.AlgorithmName),
            ("version", codes.DCM.AlgorithmVersion),
            ("parameters", codes.DCM.AlgorithmParameters),
        ]
    }
    assert algorithm == {
        "name": ["usdcm"],
        "version": ["9.9.9"],
        "parameters": ["run=r18", f"weights_sha256={'ab' * 32}"],
    }
    [observer] = report.get_observer_contexts()
    assert observer[0].value == codes.DCM.Device


def test_dsrdump_parses_the_sr(one_study: list[Dataset], tmp_path: Path) -> None:
    dsrdump = require("dsrdump", "dcmtk")
    path = write_sr(
        study_sr(results(one_study), classes=CLASSES, algorithm=ALGORITHM), tmp_path, SECRET
    )
    done = subprocess.run([dsrdump, "-Ee", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Comprehensive 3D SR Document" in done.stdout
    assert 'CODE:(,,"Finding")=(abnormal,99USDCM,"abnormal")' in done.stdout
    assert "PRELIMINARY" in done.stdout and "UNVERIFIED" in done.stdout
    assert "error" not in done.stderr.lower()


def test_class_codes_from_a_file_replace_the_private_ones(
    one_study: list[Dataset], tmp_path: Path
) -> None:
    codes_file = tmp_path / "codes.json"
    codes_file.write_text(
        json.dumps({"normal": {"value": "17621005", "scheme": "SCT", "meaning": "Normal"}})
    )
    codes = load_class_codes(codes_file, CLASSES)
    sr = study_sr(
        results(one_study, 0.1), classes=CLASSES, codes_by_class=codes, algorithm=ALGORITHM
    )
    group = report_of(write_sr(sr, tmp_path, SECRET)).get_image_measurement_groups()[0]
    assert group.finding_type is not None
    assert (group.finding_type.value, group.finding_type.scheme_designator) == ("17621005", "SCT")
    assert group.finding_type.meaning == "Normal"
    toml = tmp_path / "codes.toml"
    toml.write_text('[abnormal]\nvalue = "263654008"\nscheme = "SCT"\n')
    assert load_class_codes(toml, CLASSES)["abnormal"].meaning == "abnormal"


def test_the_same_result_is_the_same_instance(one_study: list[Dataset]) -> None:
    first = study_sr(results(one_study), classes=CLASSES, algorithm=ALGORITHM)
    again = study_sr(results(one_study), classes=CLASSES, algorithm=ALGORITHM)
    other = Algorithm(version="9.9.9", run_id="r19", weights_sha256="cd" * 32)
    changed = study_sr(results(one_study), classes=CLASSES, algorithm=other)
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    assert changed.SOPInstanceUID != first.SOPInstanceUID


def test_bad_inputs_are_refused_with_the_reason(
    synth_mix: ExportSummary, one_study: list[Dataset], tmp_path: Path
) -> None:
    with pytest.raises(ResultsError, match="no classified image"):
        study_sr([], classes=CLASSES, algorithm=ALGORITHM)
    two_studies = [headers[0] for headers in study_headers(synth_mix).values()][:2]
    with pytest.raises(ResultsError, match="2 studies"):
        study_sr(results(two_studies), classes=CLASSES, algorithm=ALGORITHM)
    with pytest.raises(ResultsError, match="not classes of the run"):
        load_class_codes(
            _write(tmp_path / "c.json", {"cyst": {"value": "1", "scheme": "SCT"}}), CLASSES
        )
    with pytest.raises(ResultsError, match="needs a 'value' and a 'scheme'"):
        load_class_codes(_write(tmp_path / "d.json", {"normal": {"value": "1"}}), CLASSES)
    bare = Dataset()
    bare.StudyInstanceUID = "1.2.3"
    with pytest.raises(ResultsError, match="lacks"):
        study_sr(
            [ImageResult(bare, {"abnormal": 1.0, "normal": 0.0})],
            classes=CLASSES,
            algorithm=ALGORITHM,
        )


def _write(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content))
    return path
