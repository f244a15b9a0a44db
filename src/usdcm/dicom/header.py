"""Recognise a DICOM file by its content and read its header, never its pixels.

Builds the :class:`~usdcm.artifacts.instance.InstanceHeader` that ingest and predict select
on (with the patient's sex, age band and study year, never a date), beside the patient
identifiers that only the header scan may see (to pseudonymise them
and hash them for label joins): :class:`PatientIdentifiers` hides them from ``repr``, and
nothing here stores them. The Sequence of Ultrasound Regions is left unparsed: selection
does not need it, and the conversion reads it (:mod:`usdcm.dicom.regions`) with the pixels.
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pydicom
from pydicom.errors import InvalidDicomError

from usdcm.artifacts.instance import InstanceHeader
from usdcm.dicom.deflate import check_inflated_size
from usdcm.dicom.demographics import patient_age_band, patient_sex, study_year
from usdcm.errors import NotDicomError, UnsupportedDicomError

PREAMBLE_LENGTH = 128
DICM_MAGIC = b"DICM"


@dataclass(frozen=True)
class PatientIdentifiers:
    """The identifying values of a header, kept in memory for pseudonyms and label joins
    only; hidden from ``repr``."""

    patient_id: str = field(default="", repr=False)
    accession_number: str = field(default="", repr=False)
    patient_name: str = field(default="", repr=False)
    birth_date: str = field(default="", repr=False)


class DicomHeader(NamedTuple):
    """What :func:`read_header` gives: the header facts (without ``patient_key``, which
    needs the project secret) and the identifiers."""

    instance: InstanceHeader
    identifiers: PatientIdentifiers


def _looks_like_raw_dataset(head: bytes) -> bool:
    """True when a file without preamble starts like a DICOM data set (group 0002 or 0008)."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or element > 0x00FF:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True  # explicit VR little endian
    (length,) = struct.unpack("<I", head[4:8])
    return int(length) < 1 << 16  # implicit VR: a plausible first element length


def sniff_dicom(path: Path) -> bool:
    """Return whether ``path`` holds DICOM, judged by content alone: a Part 10 preamble
    with ``DICM``, or a bare data set starting at group 0002 or 0008.

    Raises ``NotDicomError`` otherwise (and ``OSError`` if the file cannot be read).
    Returns ``True`` for Part 10 files and ``False`` for files without a preamble.
    """
    with path.open("rb") as handle:
        head = handle.read(PREAMBLE_LENGTH + 4)
    if len(head) == PREAMBLE_LENGTH + 4 and head[PREAMBLE_LENGTH:] == DICM_MAGIC:
        return True
    if _looks_like_raw_dataset(head):
        return False
    message = "not DICOM: no 'DICM' marker at byte 128 and no DICOM data element at the start"
    raise NotDicomError(message)


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_CODE_STRING = re.compile(r"[A-Z0-9 _]{0,16}")
_LONG_STRING_MAX = 64
STUDY_DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
"""Where the study's date is read, in order: the first that parses gives the year (and the
age at the study, with PatientBirthDate); the date itself is never kept."""


def _text(dataset: Any, keyword: str) -> str:
    value = dataset.get(keyword, "")
    return "" if value is None else str(value).strip()


def _tolerant_text(dataset: Any, keyword: str) -> str:
    """A value that is only ever parsed into a code, a band or a year: ``""`` when it
    cannot be read, so that a damaged demographic never excludes an image. What a damaged
    value could hold (other elements' bytes) never reaches a record: the parsers keep
    only a sex code, an age band or a year."""
    try:
        return _text(dataset, keyword)
    except Exception:  # pydicom converts lazily, and a damaged value may raise any type
        return ""


def _uid(dataset: Any, keyword: str, fallback: Any = "") -> str:
    """A UID value, checked: a damaged header (a length that swallows the next elements, a
    wrong VR) must not put other header values, such as the patient's name, into a record.
    """
    value = _text(dataset, keyword) or str(fallback or "").strip()
    if value and (len(value) > 64 or not _UID.fullmatch(value)):
        message = f"{keyword} is not a valid UID (damaged header)"
        raise UnsupportedDicomError(message)
    return value


def _code(dataset: Any, keyword: str) -> str:
    """A code string (CS) value, upper case, checked like :func:`_uid`."""
    value = _text(dataset, keyword).upper()
    if not _CODE_STRING.fullmatch(value):
        message = f"{keyword} is not a valid code string (damaged header)"
        raise UnsupportedDicomError(message)
    return value


def _long_string(dataset: Any, keyword: str) -> str:
    """A descriptive LO value, or ``""`` when it cannot be one (too long, control
    characters): it then holds bytes of other elements, not a manufacturer's name."""
    value = _text(dataset, keyword)
    if len(value) > _LONG_STRING_MAX or not value.isprintable() or "\\" in value:
        return ""
    return value


def _int(dataset: Any, keyword: str, default: int) -> int:
    value = dataset.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        message = f"{keyword} is not an integer"
        raise UnsupportedDicomError(message) from err


def frame_time_ms(dataset: Any) -> float | None:
    """The time between frames in ms, from FrameTime, FrameTimeVector or a frame rate."""
    frame_time = dataset.get("FrameTime")
    if frame_time not in (None, ""):
        # some scanners write FrameTime with several values: the first is the frame time
        return float(frame_time[0] if isinstance(frame_time, list | tuple) else frame_time)
    vector = dataset.get("FrameTimeVector")
    if vector:
        values = [float(v) for v in vector][1:]  # the first entry is 0 by definition
        if values:
            return sum(values) / len(values)
    for keyword in ("RecommendedDisplayFrameRate", "CineRate"):
        rate = dataset.get(keyword)
        if rate not in (None, "") and float(rate) > 0:
            return 1000.0 / float(rate)
    return None


def header_from_dataset(dataset: Any) -> DicomHeader:
    """Summarise a pydicom ``Dataset`` (header only is enough) as a :class:`DicomHeader`."""
    meta = getattr(dataset, "file_meta", None)
    meta_get = meta.get if meta is not None else (lambda _key, default=None: default)
    sop_class = _uid(dataset, "SOPClassUID", meta_get("MediaStorageSOPClassUID", ""))
    sop_instance = _uid(dataset, "SOPInstanceUID", meta_get("MediaStorageSOPInstanceUID", ""))
    transfer_syntax = str(meta_get("TransferSyntaxUID", "") or "").strip()
    if not transfer_syntax:
        transfer_syntax = pydicom.uid.ImplicitVRLittleEndian
    elif len(transfer_syntax) > 64 or not _UID.fullmatch(transfer_syntax):
        raise UnsupportedDicomError("TransferSyntaxUID is not a valid UID (damaged header)")
    try:
        dates = tuple(_tolerant_text(dataset, keyword) for keyword in STUDY_DATE_KEYWORDS)
        instance = InstanceHeader(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            study_instance_uid=_uid(dataset, "StudyInstanceUID"),
            series_instance_uid=_uid(dataset, "SeriesInstanceUID"),
            modality=_code(dataset, "Modality"),
            manufacturer=_long_string(dataset, "Manufacturer"),
            model=_long_string(dataset, "ManufacturerModelName"),
            transfer_syntax_uid=transfer_syntax,
            photometric=_code(dataset, "PhotometricInterpretation"),
            rows=_int(dataset, "Rows", 0),
            columns=_int(dataset, "Columns", 0),
            frames=max(_int(dataset, "NumberOfFrames", 1), 1),
            samples_per_pixel=_int(dataset, "SamplesPerPixel", 1),
            bits_allocated=_int(dataset, "BitsAllocated", 8),
            frame_time_ms=frame_time_ms(dataset),
            sex=patient_sex(_tolerant_text(dataset, "PatientSex")),
            age_band=patient_age_band(
                _tolerant_text(dataset, "PatientAge"),
                _tolerant_text(dataset, "PatientBirthDate"),
                dates,
            ),
            study_year=study_year(dates),
        )
        header = DicomHeader(
            instance,
            PatientIdentifiers(
                patient_id=_text(dataset, "PatientID"),
                accession_number=_text(dataset, "AccessionNumber"),
                patient_name=_text(dataset, "PatientName"),
                birth_date=_text(dataset, "PatientBirthDate"),
            ),
        )
    except (TypeError, ValueError) as err:
        message = f"header value of unexpected type ({type(err).__name__})"
        raise UnsupportedDicomError(message) from err
    return header


def read_header(path: Path) -> DicomHeader:
    """Read the header of the DICOM file at ``path`` (``stop_before_pixels``).

    Raises ``NotDicomError`` for content that is not DICOM and ``UnsupportedDicomError``
    for a DICOM header pydicom cannot parse. Messages never quote header values.
    """
    part10 = sniff_dicom(path)
    if part10:
        check_inflated_size(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, stop_before_pixels=True, force=not part10)
            if len(dataset) == 0:
                message = "the data set is empty: the file may be truncated"
                raise UnsupportedDicomError(message)
            header = header_from_dataset(dataset)
    except InvalidDicomError as err:
        message = f"not DICOM: {type(err).__name__}"
        raise NotDicomError(message) from err
    except (UnsupportedDicomError, NotDicomError):
        raise
    except Exception as err:  # pydicom raises many types on a damaged header
        message = f"unreadable DICOM header ({type(err).__name__})"
        raise UnsupportedDicomError(message) from err
    return header
