"""The validation report as an Encapsulated PDF (PS3.3 A.45.1), to file in a PACS.

Owns building the Encapsulated PDF data set with pydicom (highdicom 0.28 has no class for
it): the PDF bytes as they are, in a new study of its own (the report covers many patients,
so it cannot join one of their studies), under a placeholder patient that says what it is,
with the evaluated studies in ReferencedStudySequence and the evaluated images in
SourceInstanceSequence. It carries no patient attribute of the evaluated studies; the PDF
itself is usdcm's pseudonymous report. Never reads the report or the manifest itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
)

from usdcm.errors import ResultsError
from usdcm.results.sr import derived_uid

REPORT_PATIENT_NAME = "USDCM^VALIDATION REPORT"
"""The placeholder patient of the report's own study: not a person."""

REPORT_PATIENT_ID = "USDCM-VALIDATION"

STUDY_REFERENCE_CLASS = "1.2.840.10008.3.1.2.3.1"
"""The SOP class a Referenced Study Sequence item names for a study (Study Management)."""

PDF_SERIES_NUMBER = 9902

PDF_SERIES_DESCRIPTION = "usdcm validation report - RESEARCH USE ONLY"


@dataclass(frozen=True)
class EvaluatedImage:
    """One image the report evaluated: its SOP class and instance, and its study."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str


def sop_class_uid(value: str) -> str:
    """The SOP class UID of a manifest's ``sop_class``, which holds the class's name when
    pydicom knows it (``Ultrasound Image Storage``) and the UID otherwise; ``""`` if neither.
    A name shared by a retired class and its successor gives the successor.

    >>> sop_class_uid("Ultrasound Image Storage"), sop_class_uid("1.2.840.10008.5.1.4.1.1.6.1")
    ('1.2.840.10008.5.1.4.1.1.6.1', '1.2.840.10008.5.1.4.1.1.6.1')
    >>> sop_class_uid("Not A Class")
    ''
    """
    from pydicom._uid_dict import UID_dictionary

    text = value.strip()
    if text and all(part.isdigit() for part in text.split(".")):
        return text
    matches = [uid for uid, entry in UID_dictionary.items() if entry[0] == text]
    current = [uid for uid in matches if UID_dictionary[uid][3] != "Retired"]
    found = current or matches
    return str(found[0]) if len(found) == 1 else ""


def evaluated_images(
    image_ids: Iterable[str], manifest_rows: Iterable[Mapping[str, str]]
) -> list[EvaluatedImage]:
    """The manifest's SOP and study UIDs of ``image_ids`` (rows without them are skipped).

    >>> rows = [{"image_id": "a", "sop_class": "1.2", "sop_uid": "1.2.3", "study_uid": "1.2.4"},
    ...         {"image_id": "b", "sop_class": "1.2", "sop_uid": "1.2.5", "study_uid": "1.2.4"}]
    >>> [image.sop_instance_uid for image in evaluated_images(["b"], rows)]
    ['1.2.5']
    """
    wanted = set(image_ids)
    found: dict[str, EvaluatedImage] = {}
    for row in manifest_rows:
        image_id = row.get("image_id", "")
        if image_id not in wanted or image_id in found:
            continue
        sop_class, sop_uid = sop_class_uid(row.get("sop_class", "")), row.get("sop_uid", "")
        study_uid = row.get("study_uid", "")
        if sop_class and sop_uid and study_uid:
            found[image_id] = EvaluatedImage(sop_class, sop_uid, study_uid)
    return list(found.values())


def encapsulated_pdf(
    pdf: bytes,
    *,
    title: str,
    images: Sequence[EvaluatedImage],
    software_version: str,
    patient_id: str = REPORT_PATIENT_ID,
    patient_name: str = REPORT_PATIENT_NAME,
    now: dt.datetime | None = None,
) -> Dataset:
    """An Encapsulated PDF Storage data set holding ``pdf``, referencing ``images``.

    The study, series and instance UIDs derive from the PDF's sha256, so the same report
    sent twice is the same instance. ``title`` becomes the DocumentTitle.

    Examples
    --------
    >>> ds = encapsulated_pdf(b"%PDF-1.4 x", title="usdcm validation report", images=[],
    ...                       software_version="0.1.0")
    >>> ds.MIMETypeOfEncapsulatedDocument, ds.Modality, ds.EncapsulatedDocumentLength
    ('application/pdf', 'DOC', 10)
    """
    if not pdf.startswith(b"%PDF-"):
        message = "the report file is not a PDF (it does not start with %PDF-)."
        raise ResultsError(message)
    digest = hashlib.sha256(pdf).hexdigest()
    when = now or dt.datetime.now()
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(derived_uid("pdf-instance", digest))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    # Patient (a placeholder: the report covers many patients, pseudonymously)
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # General Study: a study of its own, referencing the evaluated ones
    ds.StudyInstanceUID = derived_uid("pdf-study", digest)
    ds.StudyDate, ds.StudyTime = date, time
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "USDCM"
    ds.StudyDescription = "usdcm validation report"
    studies = sorted({image.study_instance_uid for image in images})
    if studies:
        ds.ReferencedStudySequence = [_reference(STUDY_REFERENCE_CLASS, uid) for uid in studies]
    # Encapsulated Document Series
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = derived_uid("pdf-series", digest)
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.SeriesDescription = PDF_SERIES_DESCRIPTION
    # General Equipment, SC Equipment
    ds.Manufacturer = "usdcm"
    ds.SoftwareVersions = software_version[:64]
    ds.ConversionType = "WSD"
    # Encapsulated Document
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = f"{date}{time}"
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    if images:
        ds.SourceInstanceSequence = [
            _reference(image.sop_class_uid, image.sop_instance_uid)
            for image in sorted(images, key=lambda i: (i.study_instance_uid, i.sop_instance_uid))
        ]
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    # SOP Common
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    return ds


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item
