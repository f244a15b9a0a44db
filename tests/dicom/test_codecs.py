"""JPEG XL (imagecodecs) and MPEG-2, H.264, HEVC video (PyAV) behind ``decode_frames``.

Every file is written by :mod:`usdcm.synth.codecs` from a small gray cine drawn here, so
the decoded pixels are compared with the exact source. The tolerances are the loss measured
on this content (mean and 99th percentile of the absolute error, 8-bit levels) with a margin.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragments, parse_basic_offsets
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from usdcm.dicom import codecs
from usdcm.dicom.codecs import JPEG_XL_SYNTAXES, VIDEO_SYNTAXES, codec_library, jpegxl_shape
from usdcm.dicom.pixels import decode_frames, syntax_label
from usdcm.errors import DecodeError
from usdcm.ingest.convert import decode_volume, exclusion_for
from usdcm.synth import codecs as synth_codecs
from usdcm.synth.codecs import CODEC_SYNTAXES, VideoContainer, transcode

FRAMES, ROWS, COLUMNS = 6, 64, 96
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"

pytestmark = pytest.mark.skipif(
    not codecs.jpegxl_available(), reason="imagecodecs was built without JPEG XL"
)

# (mean, 99th percentile) of |decoded - source| in 8-bit levels. Measured on ``_cine`` with
# seeds 0-2 at synth's quality (x264 crf 15, x265 crf 16, mpeg2video 8 Mbit/s, libjxl
# distance 1, JPEG quality 90): MPEG-2 1.67/6, H.264 1.39/5, HEVC 1.24/5, HEVC Main 10
# 1.19/4.3, JPEG XL lossless 0/0, JPEG recompression 2.02/7, JPEG XL 1.95/6. Bounds: those
# plus ~20%.
LOSS: dict[str, tuple[float, float]] = {
    "1.2.840.10008.1.2.4.100": (2.0, 7.2),
    "1.2.840.10008.1.2.4.101": (2.0, 7.2),
    "1.2.840.10008.1.2.4.102": (1.7, 6.0),
    "1.2.840.10008.1.2.4.103": (1.7, 6.0),
    "1.2.840.10008.1.2.4.104": (1.7, 6.0),
    "1.2.840.10008.1.2.4.107": (1.5, 6.0),
    "1.2.840.10008.1.2.4.108": (1.45, 5.2),
    "1.2.840.10008.1.2.4.110": (0.0, 0.0),
    "1.2.840.10008.1.2.4.111": (2.5, 8.4),
    "1.2.840.10008.1.2.4.112": (2.4, 7.2),
}
# Mean signed error: 0.02-0.06 levels measured (FFmpeg's own YCbCr -> RGB conversion, which
# usdcm does not use, rounds down: -0.48). A limited/full range mix-up would be ~10 levels.
MAX_BIAS = 0.25


def _cine(seed: int = 0) -> NDArray[np.uint8]:
    """A gray cine: smooth speckle-like texture over a depth ramp, moving a little each frame."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, (ROWS + 8, COLUMNS + 8 * FRAMES))
    kernel = np.ones(5) / 5.0
    for axis in (0, 1):
        noise = np.apply_along_axis(np.convolve, axis, noise, kernel, mode="same")
    ramp = np.linspace(180.0, 60.0, ROWS)[:, np.newaxis]
    frames = [
        np.clip(ramp + 90.0 * noise[4 : 4 + ROWS, 2 * k : 2 * k + COLUMNS], 0, 255)
        for k in range(FRAMES)
    ]
    return np.rint(np.stack(frames)).astype(np.uint8)


def _native(pixels: NDArray[np.uint8], photometric: str = "MONOCHROME2") -> bytes:
    """An explicit VR little endian US multi-frame file holding ``pixels``, with one region."""
    ds = Dataset()
    ds.SOPClassUID = US_MULTIFRAME
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.NumberOfFrames = pixels.shape[0]
    ds.FrameTime = "40.0"
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 4 else 1
    if pixels.ndim == 4:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 8, 4
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = COLUMNS - 9, ROWS - 5
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.02
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


@pytest.fixture(scope="module")
def cine() -> NDArray[np.uint8]:
    return _cine()


@pytest.fixture(scope="module")
def gray_file(cine: NDArray[np.uint8]) -> bytes:
    return _native(cine)


@pytest.fixture(scope="module")
def encoded(gray_file: bytes) -> dict[UID, bytes]:
    """The gray cine in every syntax synth writes, encoded once for the module."""
    return {syntax: transcode(gray_file, syntax) for syntax in CODEC_SYNTAXES}


def _error(
    ds: Dataset, decoded: NDArray[np.unsignedinteger], source: NDArray[np.uint8]
) -> NDArray[np.float64]:
    """Signed error in 8-bit levels (10-bit output is brought back to 8-bit scale)."""
    scale = ((1 << int(ds.BitsStored)) - 1) / 255.0
    return decoded.astype(np.float64) / scale - source.astype(np.float64)


def _assert_in_order(
    ds: Dataset, decoded: NDArray[np.unsignedinteger], source: NDArray[np.uint8]
) -> None:
    """Each decoded frame is closest to the source frame of its own index (the cine moves
    two columns a frame, so any other frame is far off)."""
    for index in range(len(source)):
        errors = [float(np.abs(_error(ds, decoded[index], frame)).mean()) for frame in source]
        assert int(np.argmin(errors)) == index


def _stream(ds: Dataset) -> bytes:
    buffer = io.BytesIO(ds.PixelData)
    parse_basic_offsets(buffer)
    return b"".join(generate_fragments(buffer))


# --- every syntax: pixels within the codec's measured loss -----------------------------------


@pytest.mark.parametrize("syntax", CODEC_SYNTAXES, ids=lambda uid: str(uid).rsplit(".", 1)[-1])
def test_decoded_pixels_match_the_source_within_the_codec_loss(
    syntax: UID, encoded: dict[UID, bytes], cine: NDArray[np.uint8]
) -> None:
    ds = _read(encoded[syntax])
    assert str(ds.file_meta.TransferSyntaxUID) == syntax
    decoded = decode_frames(ds)
    deep = syntax == synth_codecs.HEVC_MAIN_10
    assert decoded.shape == cine.shape
    assert decoded.dtype == (np.uint16 if deep else np.uint8)
    error = _error(ds, decoded, cine)
    mean_bound, p99_bound = LOSS[syntax]
    assert float(np.abs(error).mean()) <= mean_bound
    assert float(np.percentile(np.abs(error), 99)) <= p99_bound
    assert abs(float(error.mean())) <= MAX_BIAS
    _assert_in_order(ds, decoded, cine)
    if syntax == synth_codecs.JPEG_XL_LOSSLESS:
        np.testing.assert_array_equal(decoded, cine)


def test_every_syntax_names_its_library() -> None:
    for syntax in JPEG_XL_SYNTAXES:
        assert codec_library(syntax) == "imagecodecs"
    for syntax in VIDEO_SYNTAXES:
        assert codec_library(syntax) == "PyAV"
    assert len(VIDEO_SYNTAXES) == 16  # .100-.108 and the fragmentable .100.1-.106.1
    assert syntax_label("1.2.840.10008.1.2.4.107") == (
        "HEVC/H.265 Main Profile / Level 5.1 (1.2.840.10008.1.2.4.107)"
    )


@pytest.mark.parametrize(
    ("syntax", "options"),
    [
        (synth_codecs.HEVC_MAIN, {"x265-params": "lossless=1:log-level=error"}),
        (synth_codecs.HEVC_MAIN_10, {"x265-params": "lossless=1:log-level=error"}),
        (synth_codecs.H264_HIGH_41, {"qp": "1"}),
    ],
)
def test_near_lossless_video_comes_back_within_one_level(
    syntax: UID, options: dict[str, str], gray_file: bytes, cine: NDArray[np.uint8]
) -> None:
    """Only the 8-bit RGB -> limited-range Y'CbCr quantisation is left: the conversion back
    is exact and unbiased."""
    ds = _read(transcode(gray_file, syntax, video_options=options))
    error = _error(ds, decode_frames(ds), cine)
    assert float(np.abs(error).max()) <= 2.0
    assert float(np.abs(error).mean()) <= 0.25
    assert abs(float(error.mean())) <= 0.1


def test_video_color_is_rgb_and_gray_stays_neutral(encoded: dict[UID, bytes]) -> None:
    rgb = decode_frames(_read(encoded[synth_codecs.H264_HIGH_41]), keep_color=True)
    assert rgb.shape == (FRAMES, ROWS, COLUMNS, 3)
    assert int(np.abs(rgb[..., 0].astype(int) - rgb[..., 2]).max()) <= 1


def test_jpegxl_keeps_rgb_and_palette_lossless(cine: NDArray[np.uint8]) -> None:
    rgb = np.stack([cine, cine[:, ::-1], 255 - cine], axis=-1)
    ds = _read(transcode(_native(rgb, "RGB"), synth_codecs.JPEG_XL_LOSSLESS))
    assert ds.PhotometricInterpretation == "RGB"
    np.testing.assert_array_equal(decode_frames(ds, keep_color=True), rgb)
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_palette.dcm")
    assert path is not None
    data = Path(path).read_bytes()
    expected = decode_frames(_read(data), keep_color=True)
    ds = _read(transcode(data, synth_codecs.JPEG_XL_LOSSLESS))
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    np.testing.assert_array_equal(decode_frames(ds, keep_color=True), expected)


def test_jpeg_recompression_declares_ybr_and_decodes_to_rgb(cine: NDArray[np.uint8]) -> None:
    rgb = np.stack([cine, cine, cine], axis=-1)
    ds = _read(transcode(_native(rgb, "RGB"), synth_codecs.JPEG_XL_JPEG_RECOMPRESSION))
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    decoded = decode_frames(ds)
    assert (
        float(np.abs(decoded.astype(float) - cine).mean())
        <= LOSS[ds.file_meta.TransferSyntaxUID][0]
    )


# --- video containers and fragments ------------------------------------------------------------


@pytest.mark.parametrize(
    ("syntax", "container"),
    [
        (synth_codecs.MPEG2_MAIN_LEVEL, VideoContainer.PROGRAM_STREAM),
        (synth_codecs.MPEG2_MAIN_LEVEL, VideoContainer.TRANSPORT_STREAM),
        (synth_codecs.H264_HIGH_41, VideoContainer.TRANSPORT_STREAM),
        (synth_codecs.H264_HIGH_41, VideoContainer.MP4),
        (synth_codecs.HEVC_MAIN, VideoContainer.MP4),
    ],
)
def test_every_container_decodes_like_the_elementary_stream(
    syntax: UID, container: VideoContainer, gray_file: bytes, encoded: dict[UID, bytes]
) -> None:
    packed = decode_frames(_read(transcode(gray_file, syntax, container=container)))
    np.testing.assert_array_equal(packed, decode_frames(_read(encoded[syntax])))


@pytest.mark.parametrize("number", range(100, 107))
def test_a_stream_split_over_fragments_decodes_the_same(
    number: int, encoded: dict[UID, bytes]
) -> None:
    """The fragmentable variants (.100.1-.106.1) of MPEG-2 and H.264."""
    source = synth_codecs.MPEG2_MAIN_LEVEL if number < 102 else synth_codecs.H264_HIGH_41
    ds = _read(encoded[source])
    whole = decode_frames(ds)
    stream = _stream(ds)
    ds.PixelData = encapsulate([stream], fragments_per_frame=5, has_bot=False)
    ds.file_meta.TransferSyntaxUID = UID(f"1.2.840.10008.1.2.4.{number}.1")
    np.testing.assert_array_equal(decode_frames(ds), whole)


# --- H.264 for 3D video (.105) and Stereo High (.106) ---------------------------------------

H264_3D = UID("1.2.840.10008.1.2.4.105")
H264_STEREO_HIGH = UID("1.2.840.10008.1.2.4.106")
_SUBSET_SPS, _NON_BASE_VIEW_SLICE = 15, 20  # H.264 Annex H (MVC) NAL unit types


def _relabel(data: bytes, syntax: UID) -> bytes:
    ds = _read(data)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _with_a_second_view(stream: bytes) -> bytes:
    """``stream`` (Annex B) with a subset SPS after its SPS and a non-base view slice after
    each base view slice, as a Stereo High stream carries them (their payload is filler:
    only their NAL unit types matter to a decoder of the base view)."""
    rng = np.random.default_rng(0)
    out = bytearray()
    for unit in (u.rstrip(b"\x00") for u in stream.split(b"\x00\x00\x01")):
        if not unit:
            continue
        out += b"\x00\x00\x00\x01" + unit
        kind = unit[0] & 0x1F
        extra = {7: _SUBSET_SPS, 1: _NON_BASE_VIEW_SLICE, 5: _NON_BASE_VIEW_SLICE}.get(kind)
        if extra is not None:  # nal_ref_idc 3; filler without 0x00, so no start code inside
            filler = rng.integers(0x11, 0xFF, 64 if extra == _SUBSET_SPS else 400, np.uint8)
            out += b"\x00\x00\x00\x01" + bytes([0x60 | extra]) + filler.tobytes()
    return bytes(out)


@pytest.fixture(scope="module")
def stereo(gray_file: bytes) -> dict[UID, bytes]:
    """H.264 High at Level 4.2 in the two stereo syntaxes. For 3D video (.105) x264 writes
    the frame packing SEI (side by side): each frame holds both views, decoded as stored.
    For Stereo High (.106) the base view plus a second view's NAL units, which FFmpeg skips
    (no encoder here writes a real second view)."""
    packed = transcode(
        gray_file, synth_codecs.H264_HIGH_42_2D, video_options={"x264-params": "frame-packing=3"}
    )
    ds = _read(transcode(gray_file, synth_codecs.H264_HIGH_42_2D))
    ds.PixelData = encapsulate([_with_a_second_view(_stream(ds))], has_bot=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return {
        H264_3D: _relabel(packed, H264_3D),
        H264_STEREO_HIGH: _relabel(buffer.getvalue(), H264_STEREO_HIGH),
    }


@pytest.mark.parametrize("syntax", [H264_3D, H264_STEREO_HIGH], ids=["105", "106"])
def test_h264_stereo_syntaxes_decode_every_frame_in_order(
    syntax: UID, stereo: dict[UID, bytes], cine: NDArray[np.uint8]
) -> None:
    ds = _read(stereo[syntax])
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert codec_library(syntax) == "PyAV"
    decoded = decode_frames(ds)
    assert decoded.shape == cine.shape == (int(ds.NumberOfFrames), ROWS, COLUMNS)
    error = _error(ds, decoded, cine)
    mean_bound, p99_bound = LOSS[synth_codecs.H264_HIGH_42_2D]
    assert float(np.abs(error).mean()) <= mean_bound
    assert float(np.percentile(np.abs(error), 99)) <= p99_bound
    assert abs(float(error.mean())) <= MAX_BIAS
    _assert_in_order(ds, decoded, cine)


def test_the_3d_stream_carries_its_frame_packing_and_stereo_high_its_second_view(
    stereo: dict[UID, bytes],
) -> None:
    """What the two fixtures claim, read back from the streams themselves."""
    import av

    packed = _stream(_read(stereo[H264_3D]))
    with av.open(io.BytesIO(packed), mode="r", format="h264") as container:
        frame = next(container.decode(video=0))
        assert frame.side_data.get("STEREO3D") is not None  # from the frame packing SEI
    units = _stream(_read(stereo[H264_STEREO_HIGH])).split(b"\x00\x00\x01")
    kinds = [unit[0] & 0x1F for unit in units if unit.rstrip(b"\x00")]
    assert kinds.count(_NON_BASE_VIEW_SLICE) == FRAMES and _SUBSET_SPS in kinds


@pytest.mark.parametrize("declared", [FRAMES - 1, FRAMES + 1])
@pytest.mark.parametrize("syntax", [H264_3D, H264_STEREO_HIGH], ids=["105", "106"])
def test_a_stereo_frame_count_that_disagrees_is_refused(
    syntax: UID, declared: int, stereo: dict[UID, bytes], tmp_path: Path
) -> None:
    ds = _read(stereo[syntax])
    ds.NumberOfFrames = declared
    path = tmp_path / "stereo.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DecodeError, match="frames than the header declares|header declares"):
        decode_volume(path, keep_color=False)


# --- frame count: excluded with a reason, never truncated ------------------------------------


@pytest.mark.parametrize(
    ("declared", "pattern"),
    [
        (FRAMES + 1, rf"holds {FRAMES} frame\(s\) but the header declares {FRAMES + 1}"),
        (FRAMES - 1, r"more frames than the header declares"),
    ],
)
@pytest.mark.parametrize("syntax", [synth_codecs.MPEG2_MAIN_LEVEL, synth_codecs.HEVC_MAIN])
def test_a_frame_count_that_disagrees_is_refused(
    syntax: UID, declared: int, pattern: str, encoded: dict[UID, bytes]
) -> None:
    ds = _read(encoded[syntax])
    ds.NumberOfFrames = declared
    with pytest.raises(DecodeError, match=pattern):
        decode_frames(ds)


def test_ingest_excludes_a_short_video_with_its_reason(
    tmp_path: Path, encoded: dict[UID, bytes]
) -> None:
    ds = _read(encoded[synth_codecs.H264_HIGH_41])
    ds.NumberOfFrames = FRAMES + 2
    path = tmp_path / "short.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DecodeError) as raised:
        decode_volume(path, keep_color=False)
    record = exclusion_for(raised.value)
    assert (record["status"], record["code"]) == ("excluded", "decode_error")
    assert f"but the header declares {FRAMES + 2}" in record["reason"]
    assert "H.264" in record["reason"]


def test_ingest_crops_and_calibrates_a_video_like_any_cine(
    tmp_path: Path, encoded: dict[UID, bytes]
) -> None:
    path = tmp_path / "hevc.dcm"
    path.write_bytes(encoded[synth_codecs.HEVC_MAIN])
    volume = decode_volume(path, keep_color=False)
    assert (volume.frames, volume.height, volume.width) == (FRAMES, ROWS - 8, COLUMNS - 16)
    assert volume.spacing_mm == pytest.approx((0.2, 0.2))


# --- undecodable files: excluded with a reason, as before -----------------------------------


def test_a_stream_of_another_codec_is_refused(encoded: dict[UID, bytes]) -> None:
    ds = _read(encoded[synth_codecs.HEVC_MAIN])
    ds.file_meta.TransferSyntaxUID = synth_codecs.H264_HIGH_41
    with pytest.raises(DecodeError, match=r"holds hevc video, not h264"):
        decode_frames(ds)


def test_a_stream_of_another_size_is_refused_before_decoding(encoded: dict[UID, bytes]) -> None:
    ds = _read(encoded[synth_codecs.MPEG2_MAIN_LEVEL])
    ds.Rows = ROWS * 2
    with pytest.raises(DecodeError, match=rf"is {ROWS} rows x {COLUMNS} columns, but the header"):
        decode_frames(ds)


@pytest.mark.parametrize("syntax", [s for s in CODEC_SYNTAXES if s in VIDEO_SYNTAXES])
def test_a_truncated_or_garbled_stream_is_a_decode_error(
    syntax: UID, encoded: dict[UID, bytes]
) -> None:
    ds = _read(encoded[syntax])
    stream = _stream(ds)
    ds.PixelData = encapsulate([stream[: len(stream) // 3]], has_bot=False)
    with pytest.raises(DecodeError):
        decode_frames(ds)
    ds.PixelData = encapsulate([bytes(range(256)) * 64], has_bot=False)
    with pytest.raises(DecodeError):
        decode_frames(ds)


def test_a_jpegxl_frame_of_another_size_is_refused_before_decoding(
    encoded: dict[UID, bytes],
) -> None:
    ds = _read(encoded[synth_codecs.JPEG_XL])
    ds.Columns = COLUMNS + 8
    with pytest.raises(DecodeError, match=rf"codestream of frame 1 is {ROWS} rows x {COLUMNS}"):
        decode_frames(ds)


def test_a_broken_jpegxl_frame_is_a_decode_error(encoded: dict[UID, bytes]) -> None:
    ds = _read(encoded[synth_codecs.JPEG_XL_LOSSLESS])
    frames = [b"\xff\x0a" + bytes(range(200))] * FRAMES
    ds.PixelData = encapsulate(frames)
    with pytest.raises(DecodeError, match=r"libjxl cannot decode|JPEG XL"):
        decode_frames(ds)


def test_only_the_codec_library_is_a_valid_plugin(encoded: dict[UID, bytes]) -> None:
    ds = _read(encoded[synth_codecs.JPEG_XL])
    assert decode_frames(ds, plugin="imagecodecs").shape == (FRAMES, ROWS, COLUMNS)
    with pytest.raises(DecodeError, match=r"plugin 'pylibjpeg' is not available .*imagecodecs"):
        decode_frames(ds, plugin="pylibjpeg")


def test_video_needs_even_sizes_to_be_written(cine: NDArray[np.uint8]) -> None:
    with pytest.raises(ValueError, match="even rows and columns"):
        transcode(_native(np.ascontiguousarray(cine[:, :-1, :])), synth_codecs.H264_HIGH_41)


# --- the JPEG XL size header -----------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(64, 80), (63, 81), (100, 100), (90, 120), (1, 1), (3000, 17), (576, 720, 3)]
)
def test_jpegxl_shape_reads_every_size_field(shape: tuple[int, ...]) -> None:
    import imagecodecs

    frame = imagecodecs.jpegxl_encode(np.zeros(shape, np.uint8), lossless=True)
    assert jpegxl_shape(bytes(frame)) == shape[:2]


def test_jpegxl_shape_reads_a_container(cine: NDArray[np.uint8]) -> None:
    import imagecodecs
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(cine[0, :33, :47]).save(buffer, format="JPEG")
    container = bytes(imagecodecs.jpegxl_encode_jpeg(buffer.getvalue()))
    assert container.startswith(b"\x00\x00\x00\x0cJXL ")
    assert jpegxl_shape(container) == (33, 47)
    assert jpegxl_shape(container[:40]) is None


def test_synth_export_instances_keep_their_crop_and_calibration(tmp_path: Path) -> None:
    """The hook for ``write_export``: any synth image, transcoded, decodes to the same crop,
    spacing and shape as the original, within the codec's loss."""
    from usdcm.synth.export import write_export

    summary = write_export(tmp_path / "export", patients=1, seed=3, frames=4)
    syntaxes = [
        synth_codecs.MPEG2_MAIN_LEVEL,
        synth_codecs.H264_HIGH_41,
        synth_codecs.HEVC_MAIN_10,
        synth_codecs.JPEG_XL_LOSSLESS,
        synth_codecs.JPEG_XL,
    ]
    for number, source in enumerate(summary.image_paths):
        original = decode_volume(source, keep_color=False)
        syntax = syntaxes[number % len(syntaxes)]
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(transcode(source.read_bytes(), syntax))
        volume = decode_volume(path, keep_color=False)
        assert (volume.crop, volume.spacing_mm) == (original.crop, original.spacing_mm)
        assert volume.volume.shape == original.volume.shape
        scale = 1023 / 255 if syntax == synth_codecs.HEVC_MAIN_10 else 1.0
        error = np.abs(volume.volume / scale - original.volume.astype(np.float64))
        assert float(error.mean()) <= (0.0 if syntax == synth_codecs.JPEG_XL_LOSSLESS else 8.0)
