"""The files a real export carries besides ultrasound images, which ingest must skip.

Owns the content of each kind of junk: a text file, a structured report, a CT image, a
secondary-capture screenshot, and a truncated image. ``export`` decides where they go.
Never writes to disk.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from usdcm.synth.catalog import RECIPES
from usdcm.synth.encode import encode_image, patient_study_header, to_bytes
from usdcm.synth.phantom import draw_phantom, render
from usdcm.synth.plan import InstancePlan, PatientPlan, SeriesPlan, make_uid
from usdcm.synth.screen import compose, draw_text
from usdcm.synth.sector import ProbeKind

BASIC_TEXT_SR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.88.11")
CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
SECONDARY_CAPTURE_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")

README_TEXT = """Synthetic ultrasound export written by `usdcm synth`.

Every patient, name, identifier and image in this folder is fake. The folder mimics a
hospital PACS export: DICOM files without extensions, a DICOMDIR, and a few files that
are not ultrasound images (this one included).
"""


def readme() -> bytes:
    """A plain text file, as export tools leave beside the DICOM files (no PHI)."""
    return README_TEXT.encode("ascii")


def _series_header(
    ds: Dataset, patient: PatientPlan, *, seed: int, kind: str, series_number: int
) -> None:
    patient_study_header(ds, patient)
    ds.SeriesInstanceUID = make_uid(seed, kind, "series", patient.index)
    ds.SOPInstanceUID = make_uid(seed, kind, "instance", patient.index)
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.SeriesDate = ds.ContentDate = ds.StudyDate
    ds.SeriesTime = ds.ContentTime = ds.StudyTime


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def structured_report(patient: PatientPlan, *, seed: int, series_number: int) -> bytes:
    """A Basic Text SR document (no pixels) with the study's finding as text."""
    ds = Dataset()
    ds.SOPClassUID = BASIC_TEXT_SR_STORAGE
    _series_header(ds, patient, seed=seed, kind="sr", series_number=series_number)
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("121070", "DCM", "Findings")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    finding.TextValue = "Focal lesion seen." if patient.abnormal else "No focal lesion."
    ds.ContentSequence = Sequence([finding])
    return to_bytes(ds, ExplicitVRLittleEndian)


def ct_image(patient: PatientPlan, *, seed: int, series_number: int) -> bytes:
    """A small CT slice (Modality CT, signed 16-bit): an image, but not ultrasound."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    _series_header(ds, patient, seed=seed, kind="ct", series_number=series_number)
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = make_uid(seed, "ct", "frame-of-reference", patient.index)
    ds.ImagePositionPatient = [-160.0, -160.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [5.0, 5.0]
    ds.SliceThickness = 5.0
    ds.KVP = 120
    y, x = np.mgrid[-32:32, -32:32]
    body = (x / 28.0) ** 2 + (y / 22.0) ** 2 <= 1.0
    hu = np.where(body, 40, -1000).astype(np.int16)
    hu[(x / 6.0) ** 2 + ((y - 8) / 5.0) ** 2 <= 1.0] = 700
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = (hu + 1024).astype("<i2").tobytes()
    ds["PixelData"].VR = "OW"
    return to_bytes(ds, ExplicitVRLittleEndian)


def screenshot(patient: PatientPlan, *, seed: int, series_number: int) -> bytes:
    """A secondary capture (Modality US) of the scanner's measurement page, PHI on screen."""
    rows, columns = 160, 240
    lines = [
        (patient.displayed_name, (255, 255, 255)),
        (f"ID {patient.patient_id}", (255, 255, 255)),
        ("MEASUREMENTS", patient.vendor.accent),
        ("D1  1.84 cm", (255, 255, 255)),
        ("D2  1.12 cm", (255, 255, 255)),
    ]
    text = draw_text(lines, rows=rows, columns=columns, origin=(8, 6))
    page = np.full((rows, columns, 3), 40, dtype=np.uint8)
    shown = text.any(axis=-1)
    page[shown] = text[shown]
    rng = np.random.default_rng([seed, 4, patient.index])
    phantom = draw_phantom(
        rng, rows=70, columns=100, box=(0, 0, 99, 69), kind=ProbeKind.LINEAR, moving=False
    )
    page[80:150, 130:230] = render(phantom, 1)[0][..., np.newaxis]
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE_IMAGE_STORAGE
    _series_header(ds, patient, seed=seed, kind="sc", series_number=series_number)
    ds.Modality = "US"
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = page.tobytes()
    ds["PixelData"].VR = "OB"
    return to_bytes(ds, ExplicitVRLittleEndian)


def truncated_image(
    patient: PatientPlan, series: SeriesPlan, instance: InstancePlan, *, seed: int
) -> bytes:
    """The first half of a valid single-frame US image file (an interrupted copy).

    ``instance`` is an image of ``series`` whose view is reused under new UIDs, stored as
    uncompressed Part 10 so that the cut falls inside the pixel data.
    """
    plain = next(recipe for recipe in RECIPES if recipe.name == "mono-explicit")
    copy = InstancePlan(
        path=instance.path,
        sop_instance_uid=make_uid(seed, "truncated", patient.index),
        instance_number=99,
        recipe=plain,
        frames=1,
        layout=instance.layout,
        phantom=instance.phantom,
        delta_cm=instance.delta_cm,
        content_seconds=instance.content_seconds,
    )
    screen = compose(
        copy.phantom,
        copy.layout,
        frames=1,
        banner=patient.banner,
        accent=patient.vendor.accent,
        delta_cm=copy.delta_cm,
    )
    whole = encode_image(patient, series, copy, screen)
    return whole[: len(whole) // 2]
