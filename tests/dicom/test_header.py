"""Tests for usdcm.dicom.header: recognising DICOM by content and summarising its header."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from usdcm.artifacts.instance import InstanceHeader
from usdcm.dicom.header import DicomHeader, header_from_dataset, read_header, sniff_dicom
from usdcm.dicom.regions import read_regions
from usdcm.errors import NotDicomError, UnsupportedDicomError

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
PATIENT_ID = "PID-SECRET-4711"
ACCESSION = "ACC-SECRET-0815"


def bundled(name: str) -> Path:
    path = get_testdata_file(name)  # bundled with pydicom: never downloads
    assert isinstance(path, str)
    return Path(path)


def small_dataset() -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = US_IMAGE_STORAGE
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = "US"
    dataset.PatientID = PATIENT_ID
    dataset.PatientName = "Doe^Jane"
    dataset.AccessionNumber = ACCESSION
    dataset.file_meta = FileMetaDataset()
    dataset.set_pixel_data(np.zeros((4, 6), dtype=np.uint8), "MONOCHROME2", 8)
    return dataset


def test_ybr_header() -> None:
    header = read_header(bundled("examples_ybr_color.dcm"))
    instance = header.instance
    assert instance.sop_class_uid == US_MULTIFRAME_IMAGE_STORAGE
    assert instance.modality == "US"
    assert instance.frames == 30
    assert (instance.rows, instance.columns) == (240, 320)
    assert instance.samples_per_pixel == 3
    assert instance.bits_allocated == 8
    assert instance.photometric == "YBR_FULL_422"
    assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
    assert instance.frame_time_ms == pytest.approx(33.333)
    assert instance.is_image


@pytest.mark.parametrize(
    ("name", "photometric", "syntax", "shape", "regions"),
    [
        ("examples_palette.dcm", "PALETTE COLOR", "1.2.840.10008.1.2.1", (350, 800), 2),
        ("examples_rgb_color.dcm", "RGB", "1.2.840.10008.1.2.1", (240, 320), 0),
        ("examples_jpeg2k.dcm", "YBR_RCT", "1.2.840.10008.1.2.4.90", (480, 640), 0),
    ],
)
def test_single_frame_headers(
    name: str, photometric: str, syntax: str, shape: tuple[int, int], regions: int
) -> None:
    header = read_header(bundled(name))
    instance = header.instance
    assert instance.sop_class_uid == US_IMAGE_STORAGE
    assert instance.modality == "US"
    assert instance.frames == 1
    assert instance.photometric == photometric
    assert instance.transfer_syntax_uid == syntax
    assert (instance.rows, instance.columns) == shape
    assert instance.frame_time_ms is None
    # the regions are the conversion's to read, from the full data set
    assert len(read_regions(pydicom.dcmread(bundled(name)))) == regions


@pytest.mark.parametrize("name", ["examples_palette.dcm", "examples_ybr_color.dcm"])
def test_header_leaves_the_region_sequence_unparsed(name: str) -> None:
    # selection needs no region: parsing the sequence in the scan was work done twice
    dataset = pydicom.dcmread(bundled(name), stop_before_pixels=True)
    header = header_from_dataset(dataset)
    assert header.instance.modality == "US"
    element = dataset.get_item("SequenceOfUltrasoundRegions")
    if not isinstance(element, RawDataElement):  # undefined length: pydicom split the items
        tags = [(item, tag) for item in element.value for tag in item.keys()]  # noqa: SIM118 (iterating a Dataset converts its elements)
        assert all(isinstance(item.get_item(tag), RawDataElement) for item, tag in tags)
    assert read_regions(dataset)  # still there for the conversion


def test_declared_pixel_bytes_matches_native_pixel_data() -> None:
    path = bundled("examples_rgb_color.dcm")
    instance = read_header(path).instance
    assert instance.declared_pixel_bytes == len(pydicom.dcmread(path).PixelData)


def test_part10_file_is_sniffed_as_such() -> None:
    assert sniff_dicom(bundled("examples_palette.dcm")) is True


def test_file_without_preamble_is_recognised(tmp_path: Path) -> None:
    dataset = small_dataset()
    del dataset.file_meta
    path = tmp_path / "IM0001"
    pydicom.dcmwrite(path, dataset, implicit_vr=True, little_endian=True, enforce_file_format=False)
    head = path.read_bytes()[:132]
    assert head[128:132] != b"DICM"
    assert sniff_dicom(path) is False
    instance = read_header(path).instance
    assert instance.sop_class_uid == US_IMAGE_STORAGE
    assert instance.modality == "US"
    assert (instance.rows, instance.columns) == (4, 6)
    assert instance.transfer_syntax_uid == ImplicitVRLittleEndian


def test_text_file_is_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Patient list, do not export\n" * 20)
    with pytest.raises(NotDicomError):
        sniff_dicom(path)
    with pytest.raises(NotDicomError):
        read_header(path)


def test_empty_file_is_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    with pytest.raises(NotDicomError):
        read_header(path)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "truncated.dcm"
    path.write_bytes(bundled("examples_ybr_color.dcm").read_bytes()[:300])
    with pytest.raises(UnsupportedDicomError, match="truncated"):
        read_header(path)


def test_repr_hides_patient_identifiers(tmp_path: Path) -> None:
    path = tmp_path / "image.dcm"
    dataset = small_dataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)
    header = read_header(path)
    assert header.identifiers.patient_id == PATIENT_ID  # for pseudonyms and label joins
    assert header.identifiers.accession_number == ACCESSION
    assert header.identifiers.patient_name == "Doe^Jane"
    assert header.instance.patient_key == ""  # no secret here: the scan pseudonymises
    for text in (repr(header), str(header), repr(header.identifiers)):
        assert PATIENT_ID not in text
        assert ACCESSION not in text
        assert "Doe" not in text


def test_repr_of_bundled_file_hides_patient_id(tmp_path: Path) -> None:
    path = tmp_path / "palette.dcm"
    shutil.copyfile(bundled("examples_palette.dcm"), path)
    header: DicomHeader = read_header(path)
    assert header.identifiers.patient_id
    assert header.identifiers.patient_id not in repr(header)
    assert isinstance(header.instance, InstanceHeader)
