"""Fixtures for ingest tests: small hand-made ultrasound DICOM files with known pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from usdcm.dicom.sop import US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE
from usdcm.ingest import IngestOptions, IngestResult, ingest
from usdcm.synth import ExportSummary, write_export

PATIENT_NAME = "QQPHI^HIDDEN"
PATIENT_ID = "QQID778899"
ACCESSION = "QQACC4455"
BIRTH_DATE = "19440704"


def make_us_dataset(
    pixels: np.ndarray,
    *,
    region: tuple[int, int, int, int] | None = None,
    delta_cm: tuple[float, float] = (0.01, 0.02),
    seed: int = 0,
) -> Dataset:
    """A MONOCHROME2 US (multi-frame when ``pixels`` is 3-D) data set with known pixels."""
    multi = pixels.ndim == 3
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME_IMAGE_STORAGE if multi else US_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"sop{seed}"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[f"study{seed}"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"series{seed}"])
    ds.Modality = "US"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.AccessionNumber = ACCESSION
    ds.PatientBirthDate = BIRTH_DATE
    ds.Manufacturer = "TestVendor"
    ds.ManufacturerModelName = "T1"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2], pixels.shape[-1]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if multi:
        ds.NumberOfFrames = pixels.shape[0]
        ds.FrameTime = 40.0
    if region is not None:
        item = Dataset()
        item.RegionSpatialFormat = 1
        item.RegionDataType = 1
        item.RegionFlags = 0
        item.RegionLocationMinX0, item.RegionLocationMinY0 = region[0], region[1]
        item.RegionLocationMaxX1, item.RegionLocationMaxY1 = region[2], region[3]
        item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3
        item.PhysicalDeltaX, item.PhysicalDeltaY = delta_cm
        ds.SequenceOfUltrasoundRegions = [item]
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    return ds


def write_us(path: Path, pixels: np.ndarray, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, make_us_dataset(pixels, **kwargs), enforce_file_format=True)
    return path


@pytest.fixture
def marked_cine() -> np.ndarray:
    """Three 12x16 frames, frame k filled with 10*k, and one marked pixel per frame."""
    frames = np.zeros((3, 12, 16), dtype=np.uint8)
    for k in range(3):
        frames[k] = 10 * (k + 1)
        frames[k, 5 + k, 9] = 200 + k  # row 5+k, column 9
    return frames


@pytest.fixture(scope="session")
def synth_export(tmp_path_factory: pytest.TempPathFactory) -> ExportSummary:
    """A small synthetic PACS export with every kind of junk, shared by the ingest tests."""
    return write_export(tmp_path_factory.mktemp("export") / "pacs", patients=6, seed=7)


@pytest.fixture(scope="session")
def ingested(
    synth_export: ExportSummary, tmp_path_factory: pytest.TempPathFactory
) -> tuple[IngestResult, Path]:
    """The export above, ingested once with two workers and its labels."""
    out = tmp_path_factory.mktemp("ingested") / "out"
    options = IngestOptions(labels=synth_export.labels_path, workers=2)
    return ingest(synth_export.root, out, options), out
