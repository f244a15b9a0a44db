"""Turn a planned instance and its screen into DICOM bytes: header, pixel encoding, file format.

Owns the header attributes, photometric conversion (grey, RGB, palette, JPEG YBR) and the
transfer syntaxes (JPEG XL and video through :func:`usdcm.synth.codecs.transcode`). Strict
when writing: every file it makes is one usdcm must be able to read. Never decides what to
draw and never writes to disk.
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from usdcm.synth.catalog import INSTITUTION, Photometric
from usdcm.synth.codecs import transcode
from usdcm.synth.phantom import ByteArray
from usdcm.synth.plan import InstancePlan, PatientPlan, SeriesPlan
from usdcm.synth.screen import RegionItem, Screen

JPEG_QUALITY = 90
FRAME_TIME_TAG = 0x00181063
PALETTE_ENTRIES = 256


def palette_lut() -> tuple[ByteArray, ByteArray, ByteArray]:
    """The grey-ish ramp palette (16-bit entries): index i is a slightly warm grey.

    Examples
    --------
    >>> red, green, blue = palette_lut()
    >>> int(red[255]), int(green[0]) < int(blue[0])
    (65535, True)
    """
    index = np.arange(PALETTE_ENTRIES, dtype=np.float64)
    red = np.rint(index * 257.0).astype("<u2")
    green = np.rint(1000.0 + index * (257.0 * 0.93)).astype("<u2")
    blue = np.rint(2000.0 + index * (257.0 * 0.85)).astype("<u2")
    return red, green, blue


def _date(value: dt.date) -> str:
    return value.strftime("%Y%m%d")


def _time(value: dt.time) -> str:
    return value.strftime("%H%M%S")


def _after(date: dt.date, time: dt.time, seconds: int) -> dt.time:
    """The time ``seconds`` after ``time`` on ``date`` (studies never cross midnight)."""
    return (dt.datetime.combine(date, time) + dt.timedelta(seconds=seconds)).time()


def patient_study_header(ds: Dataset, patient: PatientPlan) -> None:
    """Add the Patient, General Study and shared equipment attributes (fake PHI included)."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient.patient_name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = _date(patient.birth_date)
    ds.PatientSex = patient.sex
    if patient.writes_age:
        ds.PatientAge = patient.patient_age
    ds.StudyInstanceUID = patient.study_instance_uid
    ds.StudyDate = _date(patient.study_date)
    ds.StudyTime = _time(patient.study_time)
    ds.StudyID = patient.study_id
    ds.AccessionNumber = patient.accession_number
    ds.StudyDescription = patient.study_description
    ds.ReferringPhysicianName = patient.referring_physician
    ds.InstitutionName = INSTITUTION
    ds.Manufacturer = patient.vendor.manufacturer
    ds.ManufacturerModelName = patient.vendor.model


def _region_item(region: RegionItem) -> Dataset:
    item = Dataset()
    x0, y0, x1, y1 = region.box
    item.RegionSpatialFormat = region.spatial_format
    item.RegionDataType = region.data_type
    item.RegionFlags = region.flags
    item.RegionLocationMinX0 = x0
    item.RegionLocationMinY0 = y0
    item.RegionLocationMaxX1 = x1
    item.RegionLocationMaxY1 = y1
    item.ReferencePixelX0 = region.reference_x
    item.ReferencePixelY0 = region.reference_y
    item.PhysicalUnitsXDirection = region.units_x
    item.PhysicalUnitsYDirection = region.units_y
    item.ReferencePixelPhysicalValueX = 0.0
    item.ReferencePixelPhysicalValueY = 0.0
    item.PhysicalDeltaX = region.delta_x
    item.PhysicalDeltaY = region.delta_y
    return item


def image_header(
    patient: PatientPlan, series: SeriesPlan, instance: InstancePlan, screen: Screen
) -> Dataset:
    """The header of an US (multi-frame) image, without pixel data attributes."""
    recipe = instance.recipe
    ds = Dataset()
    patient_study_header(ds, patient)
    acquired = _after(patient.study_date, patient.study_time, instance.content_seconds)
    ds.SOPClassUID = recipe.sop_class_uid
    ds.SOPInstanceUID = instance.sop_instance_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    ds.InstanceCreationDate = _date(patient.study_date)
    ds.InstanceCreationTime = _time(acquired)
    ds.SeriesDate = _date(patient.study_date)
    ds.ContentDate = _date(patient.study_date)
    ds.SeriesTime = _time(patient.study_time)
    ds.ContentTime = _time(acquired)
    ds.Modality = "US"
    ds.SeriesDescription = series.description
    ds.BodyPartExamined = "ABDOMEN"
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    ds.InstanceNumber = instance.instance_number
    ds.SequenceOfUltrasoundRegions = Sequence([_region_item(r) for r in screen.regions])
    if recipe.cine:
        ds.NumberOfFrames = screen.frames
        ds.FrameIncrementPointer = FRAME_TIME_TAG
        ds.FrameTime = f"{patient.vendor.frame_time_ms:.1f}"
        ds.RecommendedDisplayFrameRate = round(1000.0 / patient.vendor.frame_time_ms)
    return ds


def _set_image_pixel_module(ds: Dataset, rows: int, columns: int, samples: int, pi: str) -> None:
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = pi
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0


def _native_pixels(ds: Dataset, pixels: ByteArray) -> None:
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OB"


def jpeg_frames(rgb: ByteArray) -> list[bytes]:
    """Encode RGB frames as baseline JPEG with 4:2:2 chroma subsampling (YBR_FULL_422)."""
    encoded = []
    for frame in rgb:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=1)
        encoded.append(buffer.getvalue())
    return encoded


def encode_image(
    patient: PatientPlan, series: SeriesPlan, instance: InstancePlan, screen: Screen
) -> bytes:
    """Return the file bytes of one image instance, stored the way its recipe says, or
    re-encoded in the instance's codec from the recipe's uncompressed pixels (a JPEG recipe's
    from RGB): one lossy step, never two."""
    recipe = instance.recipe
    ds = image_header(patient, series, instance, screen)
    rows, columns = instance.layout.rows, instance.layout.columns
    photometric = recipe.photometric
    if instance.codec is not None and photometric is Photometric.YBR_FULL_422:
        photometric = Photometric.RGB
    pixels: ByteArray
    if photometric is Photometric.MONOCHROME2:
        pixels = screen.gray()
        _set_image_pixel_module(ds, rows, columns, 1, photometric.value)
    elif photometric is Photometric.PALETTE_COLOR:
        pixels = screen.gray()
        _set_image_pixel_module(ds, rows, columns, 1, photometric.value)
        red, green, blue = palette_lut()
        for colour, lut in (("Red", red), ("Green", green), ("Blue", blue)):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [PALETTE_ENTRIES, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", lut.tobytes())
    else:
        pixels = screen.rgb()
        _set_image_pixel_module(ds, rows, columns, 3, photometric.value)
    if not recipe.cine:
        pixels = pixels[0]
    syntax = recipe.transfer_syntax if instance.codec is None else ExplicitVRLittleEndian
    ds.LossyImageCompression = "00"
    if syntax == JPEGBaseline8Bit:
        frames = jpeg_frames(pixels if recipe.cine else pixels[np.newaxis])
        ds.PixelData = encapsulate(frames, fragments_per_frame=recipe.fragments_per_frame)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = round(pixels.nbytes / sum(len(f) for f in frames), 2)
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    elif syntax in (RLELossless, JPEG2000Lossless):
        _native_pixels(ds, pixels)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(syntax, pixels, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    else:
        _native_pixels(ds, pixels)
    if instance.codec is not None:
        return transcode(to_bytes(ds, syntax), instance.codec)
    return to_bytes(ds, syntax, part10=recipe.part10)


def to_bytes(ds: Dataset, transfer_syntax: str, *, part10: bool = True) -> bytes:
    """Encode ``ds``: as a Part 10 file (preamble, ``DICM``, file meta), or, with
    ``part10=False``, as a bare Implicit VR Little Endian data set as old archives keep them.
    """
    buffer = io.BytesIO()
    if not part10:
        if transfer_syntax != ImplicitVRLittleEndian:
            message = f"a file without meta must be Implicit VR LE, not {transfer_syntax}"
            raise ValueError(message)
        if hasattr(ds, "file_meta"):
            del ds.file_meta
        pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
        return buffer.getvalue()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
