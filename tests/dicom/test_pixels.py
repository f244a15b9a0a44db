"""Tests for usdcm.dicom.pixels, checked against independent decodes of real bytes.

Bundled pydicom files only (``get_testdata_file`` of a bundled name never downloads).
The references are decoded with Pillow or openjpeg directly and turned into luminance here,
with floats, so they share no code with the module under test.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from openjpeg.utils import decode as openjpeg_decode
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import convert_color_space
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from usdcm.dicom import pixels
from usdcm.dicom.pixels import crop_frames, decode_frames, frames_to_volume, to_grayscale
from usdcm.dicom.regions import UltrasoundRegion, read_regions, select_tissue_region
from usdcm.errors import DecodeError

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
PATIENT_ID = "PID-SECRET-4711"
PATIENT_NAME = "Doe^Jane"

# Gray levels of YBR_FULL_422 are its Y samples (PS3.3 C.7.6.3.1.2: Y is the BT.601
# luminance), measured against Pillow's own decode to YCbCr (libjpeg-turbo, no colour
# conversion) of examples_ybr_color.dcm: pylibjpeg mean |diff| 0.012, max 1 level (IDCT
# rounding); the pillow plugin equal. The luminance of the RGB after a YCbCr->RGB round
# trip differs by up to 6 levels where the colour is out of the RGB gamut and is clipped.
YBR_MEAN_TOLERANCE = 0.05
YBR_MAX_TOLERANCE = 1


def bundled(name: str) -> Dataset:
    path = get_testdata_file(name)  # bundled with pydicom: never downloads
    assert isinstance(path, str)
    return pydicom.dcmread(path)


def luminance(rgb: NDArray[Any]) -> NDArray[np.float64]:
    """BT.601 luminance in floats, unrounded: the independent reference."""
    values = rgb.astype(np.float64)
    return 0.299 * values[..., 0] + 0.587 * values[..., 1] + 0.114 * values[..., 2]


def assert_rounds(decoded: NDArray[Any], reference: NDArray[np.float64]) -> None:
    """Each decoded level is the reference luminance correctly rounded (|diff| <= 0.5)."""
    assert decoded.shape == reference.shape
    assert np.abs(decoded.astype(np.float64) - reference).max() <= 0.5 + 1e-9


def make_dataset(
    pixel_array: NDArray[Any],
    photometric: str = "MONOCHROME2",
    *,
    bits_stored: int | None = None,
) -> Dataset:
    """A small explicit VR little endian US image with identifying attributes set."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.SOPClassUID = US_IMAGE_STORAGE
    dataset.SOPInstanceUID = generate_uid()
    dataset.Modality = "US"
    dataset.PatientID = PATIENT_ID
    dataset.PatientName = PATIENT_NAME
    if bits_stored is None:
        bits_stored = 8 * pixel_array.dtype.itemsize
    dataset.set_pixel_data(pixel_array, photometric, bits_stored)
    return dataset


@pytest.fixture(scope="module")
def ybr() -> Dataset:
    return bundled("examples_ybr_color.dcm")


@pytest.fixture(scope="module")
def ybr_pillow_y(ybr: Dataset) -> NDArray[np.uint8]:
    """The Y samples of Pillow's decode of each frame of examples_ybr_color.dcm, asked for
    in YCbCr so that libjpeg-turbo converts no colour."""
    fragments = generate_frames(ybr.PixelData, number_of_frames=int(ybr.NumberOfFrames))
    frames = []
    for data in fragments:
        image = Image.open(io.BytesIO(data))
        image.draft("YCbCr", image.size)
        assert image.mode == "YCbCr"
        frames.append(np.asarray(image)[..., 0])
    return np.stack(frames)


@pytest.fixture(scope="module")
def ybr_pillow_rgb(ybr: Dataset) -> NDArray[np.uint8]:
    """Pillow's decode of each frame's fragments of examples_ybr_color.dcm, in file order."""
    fragments = generate_frames(ybr.PixelData, number_of_frames=int(ybr.NumberOfFrames))
    frames = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in fragments]
    return np.stack(frames)


# --- JPEG Baseline, YBR_FULL_422, 30 frames ------------------------------------------------


@pytest.mark.parametrize("plugin", ["", "pylibjpeg", "pillow"])
def test_ybr_jpeg_gray_is_the_y_of_pillow_decode(
    ybr: Dataset, ybr_pillow_y: NDArray[np.uint8], plugin: str
) -> None:
    frames = decode_frames(ybr, plugin=plugin)
    assert frames.shape == (30, 240, 320)
    assert frames.dtype == np.uint8
    difference = np.abs(frames.astype(np.float64) - ybr_pillow_y)
    assert difference.mean() < YBR_MEAN_TOLERANCE
    assert difference.max() <= YBR_MAX_TOLERANCE


def test_ybr_jpeg_is_converted_to_rgb_once(ybr: Dataset, ybr_pillow_rgb: NDArray[np.uint8]) -> None:
    rgb = decode_frames(ybr, keep_color=True)
    assert rgb.shape == (30, 240, 320, 3)
    difference = np.abs(rgb.astype(np.int16) - ybr_pillow_rgb.astype(np.int16))
    # Unconverted YCbCr, or a second conversion, is off by tens of levels on average.
    assert difference.mean() < 0.2
    assert difference.max() <= 4


def test_ybr_jpeg_keeps_frame_order(ybr: Dataset, ybr_pillow_y: NDArray[np.uint8]) -> None:
    frames = decode_frames(ybr).astype(np.float64)
    reference = ybr_pillow_y.astype(np.float64)
    fragments = list(generate_frames(ybr.PixelData, number_of_frames=30))
    for k in range(30):
        distances = np.abs(frames[k] - reference).mean(axis=(1, 2))
        assert distances[k] < 0.2, f"frame {k} does not match fragment {k}"
        # Two pairs of frames are byte-identical in the file; every other frame is far.
        others = [j for j in range(30) if fragments[j] != fragments[k]]
        assert distances[others].min() > 0.5, f"frame {k} also matches another fragment"


def test_plugin_failure_falls_back_to_another_plugin(
    ybr: Dataset, ybr_pillow_y: NDArray[np.uint8], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(src: bytes, runner: object) -> bytes:
        raise RuntimeError("simulated codec failure")

    decoder = get_decoder(JPEGBaseline8Bit)
    monkeypatch.setitem(decoder._available, "pylibjpeg", broken)
    frames = decode_frames(ybr)
    difference = np.abs(frames.astype(np.float64) - ybr_pillow_y)
    assert difference.mean() < YBR_MEAN_TOLERANCE
    with pytest.raises(DecodeError, match=r"frame 1 of 30 .*1\.2\.840\.10008\.1\.2\.4\.50"):
        decode_frames(ybr, plugin="pylibjpeg")


def test_unknown_plugin_is_a_decode_error(ybr: Dataset) -> None:
    with pytest.raises(DecodeError, match="'nope' is not available"):
        decode_frames(ybr, plugin="nope")


def test_pydicom_warnings_are_suppressed(ybr: Dataset) -> None:
    dataset = copy.deepcopy(ybr)
    dataset.PhotometricInterpretation = "RGB"  # the JFIF marker makes pydicom warn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decode_frames(dataset)
    assert caught == []


# --- bundled native and JPEG 2000 files ----------------------------------------------------


def test_palette_matches_lut_applied_by_hand() -> None:
    dataset = bundled("examples_palette.dcm")
    indices = np.frombuffer(dataset.PixelData, dtype=np.uint8).reshape(350, 800)
    descriptor = list(dataset.RedPaletteColorLookupTableDescriptor)
    assert descriptor == [256, 0, 16]
    channels = []
    for colour in ("Red", "Green", "Blue"):
        lut = np.frombuffer(dataset[f"{colour}PaletteColorLookupTableData"].value, dtype="<u2")
        channels.append((lut >> 8)[indices])  # 16-bit entries to 8-bit output: high byte
    rgb = np.stack(channels, axis=-1)

    frames = decode_frames(dataset)
    assert frames.shape == (1, 350, 800)
    assert frames.dtype == np.uint8
    assert_rounds(frames[0], luminance(rgb))
    np.testing.assert_array_equal(decode_frames(dataset, keep_color=True)[0], rgb)


def test_rgb_matches_raw_bytes() -> None:
    dataset = bundled("examples_rgb_color.dcm")
    raw = np.frombuffer(dataset.PixelData, dtype=np.uint8)
    if dataset.PlanarConfiguration == 0:
        rgb = raw.reshape(240, 320, 3)
    else:
        rgb = raw.reshape(3, 240, 320).transpose(1, 2, 0)
    frames = decode_frames(dataset)
    assert frames.shape == (1, 240, 320)
    assert_rounds(frames[0], luminance(rgb))
    np.testing.assert_array_equal(decode_frames(dataset, keep_color=True)[0], rgb)


def test_planar_configuration_one_is_respected() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (1, 6, 7, 3), dtype=np.uint8)
    dataset = make_dataset(rgb, "RGB")
    dataset.PlanarConfiguration = 1
    dataset.PixelData = rgb[0].transpose(2, 0, 1).tobytes()
    np.testing.assert_array_equal(decode_frames(dataset, keep_color=True), rgb)


@pytest.mark.parametrize("plugin", ["", "pylibjpeg", "pillow"])
def test_jpeg2000_matches_openjpeg_decode(plugin: str) -> None:
    dataset = bundled("examples_jpeg2k.dcm")
    assert dataset.PhotometricInterpretation == "YBR_RCT"
    codestream = next(generate_frames(dataset.PixelData, number_of_frames=1))
    rgb = openjpeg_decode(codestream)  # the codestream's reversible MCT gives RGB back
    assert rgb.shape == (480, 640, 3)
    frames = decode_frames(dataset, plugin=plugin)
    assert frames.shape == (1, 480, 640)
    assert_rounds(frames[0], luminance(rgb))
    np.testing.assert_array_equal(decode_frames(dataset, keep_color=True, plugin=plugin)[0], rgb)


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_lossless_syntaxes_agree_with_native(name: str) -> None:
    native = bundled("MR_small.dcm")  # signed 16-bit MONOCHROME2, explicit VR LE
    expected = native.pixel_array.astype(np.int32) + 32768
    frames = decode_frames(bundled(name))
    assert frames.dtype == np.uint16
    np.testing.assert_array_equal(frames[0], expected)


# --- synthetic images ----------------------------------------------------------------------


def test_monochrome1_is_inverted() -> None:
    values = np.array([[[0, 1, 100], [127, 200, 255]]], dtype=np.uint8)
    frames = decode_frames(make_dataset(values, "MONOCHROME1"))
    np.testing.assert_array_equal(frames, 255 - values)
    assert frames.dtype == np.uint8


def test_monochrome1_inverts_against_bits_stored() -> None:
    values = np.array([[[0, 1, 2048], [4000, 4094, 4095]]], dtype=np.uint16)
    frames = decode_frames(make_dataset(values, "MONOCHROME1", bits_stored=12))
    np.testing.assert_array_equal(frames, 4095 - values)
    assert frames.dtype == np.uint16


def test_16_bit_monochrome2_stays_uint16_exactly() -> None:
    values = np.array([[[0, 1, 255, 256], [4095, 32768, 65534, 65535]]], dtype=np.uint16)
    frames = decode_frames(make_dataset(values))
    assert frames.dtype == np.uint16
    np.testing.assert_array_equal(frames, values)


def test_signed_pixels_are_offset_into_unsigned_range() -> None:
    values = np.array([[[-2048, -1, 0, 2047]]], dtype=np.int16)
    frames = decode_frames(make_dataset(values, bits_stored=12))
    np.testing.assert_array_equal(frames, values.astype(np.int32) + 2048)


def test_jpeg2000_round_trip_and_codestream_deeper_than_header() -> None:
    values = (np.arange(64 * 64) % 4096).astype(np.uint16).reshape(1, 64, 64)
    dataset = make_dataset(values, bits_stored=12)
    dataset.compress(JPEG2000Lossless)
    np.testing.assert_array_equal(decode_frames(dataset), values)
    dataset.BitsStored = 8  # the codestream keeps its 12-bit precision
    dataset.HighBit = 7
    with pytest.raises(DecodeError, match=r"outside the 0\.\.255 range .*Bits Stored 8"):
        decode_frames(dataset)


def test_frames_keep_their_order() -> None:
    values = np.stack([np.full((3, 4), level, dtype=np.uint8) for level in (10, 20, 30)])
    values[1, 2, 3] = 99
    frames = decode_frames(make_dataset(values))
    assert frames.shape == (3, 3, 4)
    np.testing.assert_array_equal(frames, values)


def test_gray_keep_color_repeats_the_level() -> None:
    values = np.array([[[5, 6], [7, 8]]], dtype=np.uint8)
    rgb = decode_frames(make_dataset(values), keep_color=True)
    assert rgb.shape == (1, 2, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], values)


def test_native_ybr_full_becomes_rgb() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (2, 8, 9, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb.copy(), "RGB", "YBR_FULL", per_frame=True)  # in place!
    dataset = make_dataset(ybr, "YBR_FULL")
    decoded = decode_frames(dataset, keep_color=True)
    assert np.abs(decoded.astype(np.int16) - rgb).max() <= 2
    gray = decode_frames(dataset)
    assert np.abs(gray - luminance(rgb)).max() <= 2.5
    np.testing.assert_array_equal(gray, ybr[..., 0])  # Y is the luminance: no round trip


def test_ybr_full_gray_is_y_where_rgb_would_clip() -> None:
    # Y 255 with Cr 255 (R would be 433) and Y 0 with Cr 0 lie outside the RGB gamut: an
    # RGB round trip clips them, and their luminance moves by tens of levels; gray stays Y.
    ybr = np.array([[[[255, 128, 255], [0, 128, 0], [30, 128, 128]]]], dtype=np.uint8)
    gray = decode_frames(make_dataset(ybr, "YBR_FULL"))
    np.testing.assert_array_equal(gray, [[[255, 0, 30]]])
    clipped = to_grayscale(decode_frames(make_dataset(ybr, "YBR_FULL"), keep_color=True))
    assert np.abs(clipped.astype(int) - [255, 0, 30])[0, 0, :2].min() > 40


def test_ybr_ict_outside_jpeg2000_is_refused() -> None:
    rgb = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    dataset = make_dataset(rgb, "RGB")
    dataset.PhotometricInterpretation = "YBR_ICT"
    with pytest.raises(DecodeError, match="still YBR_ICT"):
        decode_frames(dataset)


def _palette_dataset(
    indices: NDArray[Any], lut: NDArray[Any], descriptor_bits: int, bits_stored: int
) -> Dataset:
    dataset = make_dataset(indices, "PALETTE COLOR", bits_stored=bits_stored)
    descriptor = [len(lut) % 65536, 0, descriptor_bits]
    for offset, colour in enumerate(("Red", "Green", "Blue")):
        setattr(dataset, f"{colour}PaletteColorLookupTableDescriptor", descriptor)
        channel = np.roll(lut, offset * 7).astype(lut.dtype)
        setattr(dataset, f"{colour}PaletteColorLookupTableData", channel.tobytes())
    return dataset


def test_palette_16_bit_full_range_entries_scale_to_8_bit() -> None:
    lut = (np.arange(256, dtype=np.uint32) * 257).astype("<u2")  # 0..65535
    indices = np.array([[[0, 1, 128, 255]]], dtype=np.uint8)
    rgb = decode_frames(_palette_dataset(indices, lut, 16, 8), keep_color=True)
    assert rgb.dtype == np.uint8
    expected = np.stack([np.roll(lut, k * 7)[indices] >> 8 for k in range(3)], axis=-1)
    np.testing.assert_array_equal(rgb, expected)


def test_palette_8_bit_values_in_16_bit_entries_are_read_as_8_bit() -> None:
    lut = np.arange(256, dtype="<u2")[::-1].copy()  # declared 16-bit, values 255..0
    indices = np.array([[[0, 1, 128, 255]]], dtype=np.uint8)
    rgb = decode_frames(_palette_dataset(indices, lut, 16, 8), keep_color=True)
    np.testing.assert_array_equal(rgb[..., 0], 255 - indices)


def test_palette_with_16_bit_indices_gives_uint16() -> None:
    lut = (np.arange(4096, dtype=np.uint32) * 16).astype("<u2")
    indices = np.array([[[0, 1, 2048, 4095]]], dtype=np.uint16)
    rgb = decode_frames(_palette_dataset(indices, lut, 16, 12), keep_color=True)
    assert rgb.dtype == np.uint16
    np.testing.assert_array_equal(rgb[..., 0], indices * 16)


def test_palette_with_more_than_256_8_bit_entries() -> None:
    lut = (np.arange(4096) // 16).astype(np.uint8)  # pydicom 3.0 alone wraps index 256 to 0
    indices = np.array([[[0, 255, 256, 300, 4095]]], dtype=np.uint16)
    rgb = decode_frames(_palette_dataset(indices, lut, 8, 12), keep_color=True)
    assert rgb.dtype == np.uint16
    np.testing.assert_array_equal(rgb[..., 0], lut[indices].astype(np.uint16) * 257)


def test_palette_without_lut_is_a_decode_error() -> None:
    dataset = make_dataset(np.zeros((1, 2, 2), dtype=np.uint8), "PALETTE COLOR")
    with pytest.raises(DecodeError, match="palette"):
        decode_frames(dataset)


def test_rle_round_trip() -> None:
    rng = np.random.default_rng(3)
    for values in (
        rng.integers(0, 256, (2, 16, 12), dtype=np.uint8),
        rng.integers(0, 4096, (1, 16, 12), dtype=np.uint16),
        rng.integers(0, 256, (2, 16, 12, 3), dtype=np.uint8),
    ):
        photometric = "RGB" if values.ndim == 4 else "MONOCHROME2"
        dataset = make_dataset(values, photometric, bits_stored=12 if values.itemsize == 2 else 8)
        dataset.compress(RLELossless)
        assert dataset.file_meta.TransferSyntaxUID == RLELossless
        frames = decode_frames(dataset, keep_color=values.ndim == 4)
        np.testing.assert_array_equal(frames, values)


def test_deflated_round_trip() -> None:
    values = (np.arange(2 * 20 * 30) % 251).astype(np.uint8).reshape(2, 20, 30)
    dataset = make_dataset(values)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    assert values.tobytes() not in buffer.getvalue()  # really deflated
    read = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert read.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(decode_frames(read), values)


def test_data_set_without_file_meta_uses_its_encoding() -> None:
    values = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    dataset = make_dataset(values)
    del dataset.file_meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, implicit_vr=True, little_endian=True)
    read = pydicom.dcmread(io.BytesIO(buffer.getvalue()), force=True)
    np.testing.assert_array_equal(decode_frames(read), values)
    with pytest.raises(DecodeError, match="no Transfer Syntax UID"):
        decode_frames(dataset)


# --- header and pixel data that disagree ---------------------------------------------------


def _assert_no_identifiers(error: pytest.ExceptionInfo[DecodeError]) -> None:
    assert PATIENT_ID not in str(error.value)
    assert "Doe" not in str(error.value)


@pytest.mark.parametrize(
    ("keyword", "value", "pattern"),
    [
        ("Rows", 5, r"holds 24 bytes, fewer than the 40"),
        ("Rows", 2, r"holds 24 bytes, more than the 16"),
        ("NumberOfFrames", 3, r"fewer than the 36"),
        ("NumberOfFrames", 1, r"more than the 12 .*that is 2 whole frame"),
        ("Columns", 3, r"more than the 18"),
    ],
)
def test_native_header_mismatch_is_named(keyword: str, value: int, pattern: str) -> None:
    dataset = make_dataset(np.zeros((2, 3, 4), dtype=np.uint8))
    setattr(dataset, keyword, value)
    with pytest.raises(DecodeError, match=pattern) as error:
        decode_frames(dataset)
    _assert_no_identifiers(error)


def test_jpeg_rows_mismatch_is_named(ybr: Dataset) -> None:
    dataset = copy.deepcopy(ybr)
    dataset.Rows = 200
    dataset.PatientID = PATIENT_ID
    with pytest.raises(DecodeError, match=r"240 rows x 320 columns x 3 components.*Rows 200") as e:
        decode_frames(dataset)
    assert "JPEG Baseline" in str(e.value)
    _assert_no_identifiers(e)


@pytest.mark.parametrize(
    ("declared", "pattern"),
    [(31, r"holds 30 frame\(s\) but the header declares 31"), (29, r"more frames than")],
)
def test_jpeg_frame_count_mismatch_is_named(ybr: Dataset, declared: int, pattern: str) -> None:
    dataset = copy.deepcopy(ybr)
    dataset.NumberOfFrames = declared
    with pytest.raises(DecodeError, match=pattern):
        decode_frames(dataset)


def test_samples_per_pixel_mismatch_is_named() -> None:
    dataset = bundled("examples_rgb_color.dcm")
    dataset.SamplesPerPixel = 1
    with pytest.raises(DecodeError, match="Samples per Pixel is 1 but RGB needs 3"):
        decode_frames(dataset)


def test_rle_segment_mismatch_is_named() -> None:
    dataset = make_dataset(np.zeros((1, 4, 4), dtype=np.uint8))
    dataset.compress(RLELossless)
    dataset.SamplesPerPixel = 3
    dataset.PhotometricInterpretation = "RGB"
    with pytest.raises(DecodeError, match="has 1 segments"):
        decode_frames(dataset)


def test_corrupt_jpeg_is_a_decode_error_naming_the_syntax() -> None:
    dataset = make_dataset(np.zeros((1, 8, 8), dtype=np.uint8))
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.PixelData = encapsulate([b"\xff\xd8\xff\xdb\x00\x04garbage\xff\xd9"])
    dataset["PixelData"].VR = "OB"
    with pytest.raises(DecodeError, match=r"JPEG Baseline \(Process 1\) \(1\.2\.840") as error:
        decode_frames(dataset)
    _assert_no_identifiers(error)


def test_truncated_encapsulated_file_is_a_decode_error() -> None:
    path = get_testdata_file("examples_ybr_color.dcm")
    assert isinstance(path, str)
    with open(path, "rb") as handle:
        head = handle.read(100_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(io.BytesIO(head))
    with pytest.raises(DecodeError, match="truncated"):
        decode_frames(dataset)


def test_missing_pixel_data_is_a_decode_error() -> None:
    dataset = make_dataset(np.zeros((1, 2, 2), dtype=np.uint8))
    del dataset.PixelData
    with pytest.raises(DecodeError, match="no Pixel Data"):
        decode_frames(dataset)


# --- transfer syntaxes without a decoder ---------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "pattern"),
    [
        ("1.2.840.10008.1.2.4.94", r"JPIP Referenced .*not supported"),
        ("1.2.3.4.5", r"unknown transfer syntax \(1\.2\.3\.4\.5\)"),
    ],
)
def test_syntax_without_decoder_is_named(uid: str, pattern: str) -> None:
    dataset = make_dataset(np.zeros((1, 2, 2), dtype=np.uint8))
    dataset.file_meta.TransferSyntaxUID = UID(uid)
    dataset.PixelData = encapsulate([b"\x00" * 8])
    with pytest.raises(DecodeError, match=pattern):
        decode_frames(dataset)


def test_missing_plugin_says_what_to_install(ybr: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"]

    monkeypatch.setattr(pixels, "get_decoder", lambda uid: Unavailable())
    with pytest.raises(DecodeError, match=r"JPEG Baseline .* is installed: install .*libjpeg"):
        decode_frames(ybr)


# --- grayscale, crop and volume layout -----------------------------------------------------


def test_to_grayscale_uses_bt601_weights() -> None:
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(to_grayscale(rgb), [76, 150, 29, 255])
    deep = np.array([[65535, 0, 0], [65535, 65535, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(to_grayscale(deep), [19595, 65535])
    with pytest.raises(ValueError, match="last axis"):
        to_grayscale(np.zeros((2, 2), dtype=np.uint8))


def test_to_grayscale_rounds_every_pixel_correctly() -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (3, 50, 40, 3), dtype=np.uint8)
    assert_rounds(to_grayscale(rgb), luminance(rgb))


def test_crop_uses_inclusive_box() -> None:
    frames = np.arange(2 * 6 * 8, dtype=np.uint16).reshape(2, 6, 8)
    region = UltrasoundRegion(x0=2, y0=1, x1=5, y1=3, spatial_format=1)
    cropped = crop_frames(frames, region)
    assert cropped.shape == (2, 3, 4)
    assert cropped[1, 0, 0] == frames[1, 1, 2]
    assert cropped[1, -1, -1] == frames[1, 3, 5]
    assert crop_frames(frames, None) is frames
    colour = np.zeros((1, 6, 8, 3), dtype=np.uint8)
    assert crop_frames(colour, region).shape == (1, 3, 4, 3)


def test_crop_refuses_box_outside_image() -> None:
    frames = np.zeros((1, 6, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="clip it first"):
        crop_frames(frames, UltrasoundRegion(x0=0, y0=0, x1=8, y1=5, spatial_format=1))


def test_palette_crop_to_tissue_region() -> None:
    dataset = bundled("examples_palette.dcm")
    region = select_tissue_region(read_regions(dataset), rows=350, columns=800)
    assert region is not None
    cropped = crop_frames(decode_frames(dataset), region)
    assert cropped.shape == (1, 350 - 60, 800 - 120)


def test_volume_puts_marked_pixel_at_column_row_frame() -> None:
    frames = np.zeros((4, 5, 6), dtype=np.uint8)
    frames[3, 1, 4] = 200  # frame 3, row 1, column 4
    volume = frames_to_volume(frames)
    assert volume.shape == (6, 5, 4)
    assert volume[4, 1, 3] == 200
    assert int(volume.sum()) == 200
    assert np.shares_memory(volume, frames)


def test_colour_volume_keeps_channels_last() -> None:
    frames = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    frames[1, 2, 3] = (1, 2, 3)
    volume = frames_to_volume(frames)
    assert volume.shape == (4, 3, 2, 3)
    assert tuple(volume[3, 2, 1]) == (1, 2, 3)
    with pytest.raises(ValueError, match="expected"):
        frames_to_volume(np.zeros((2, 2), dtype=np.uint8))
