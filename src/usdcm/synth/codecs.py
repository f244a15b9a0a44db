"""Re-encode a synthetic instance in JPEG XL or a video transfer syntax.

Owns the writing side of :mod:`usdcm.dicom.codecs`: JPEG XL through ``imagecodecs``
(libjxl) and MPEG-2, H.264 and HEVC through PyAV (FFmpeg's mpeg2video, libx264 and
libx265), the same libraries usdcm decodes them with. It takes the bytes
:func:`usdcm.synth.encode.encode_image` wrote, keeps the header (regions included), and
replaces the Image Pixel module and the Pixel Data. Strict when writing: the Pixel Data
holds exactly the frames the header declares. Never draws pixels and never writes to disk.

What it writes
--------------
* JPEG XL Lossless (.110): every frame losslessly, in the source's own photometric
  interpretation (MONOCHROME2, RGB, or PALETTE COLOR indices with their table).
* JPEG XL JPEG Recompression (.111): each frame encoded as baseline JPEG (YBR_FULL_422 for
  colour, MONOCHROME2 for gray), then transcoded losslessly into JPEG XL.
* JPEG XL (.112): lossy, at :data:`JPEG_XL_DISTANCE` (libjxl's "visually lossless").
* MPEG-2 MP@ML and MP@HL (.100, .101), H.264 High Profile at Level 4.1, BD-compatible at
  4.1 and at 4.2 for 2D (.102, .103, .104), HEVC Main and Main 10 at Level 5.1 (.107,
  .108): YBR_PARTIAL_420, one stream across the fragments, an elementary stream by default
  or an MPEG-2 transport stream, MP4 file or MPEG-2 program stream on request. At the
  quality scanners store cine at (about JPEG quality 90), one encoder thread, and no
  CPU-dependent SEI: the same bytes on every machine with the same libraries.

Not written: H.264 for 3D video (.105, frame-packed stereo pairs) and Stereo High (.106,
whose second view no PyAV encoder produces; the tests label an H.264 stream with these
syntaxes instead), and the level-specific screen sizes (MPEG-2 MP@ML is 720 x 576 at most,
and scanners write exactly that): synth keeps its own screen size.
"""

from __future__ import annotations

import io
import warnings
from enum import StrEnum
from fractions import Fraction
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.pixels.processing import apply_color_lut
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from usdcm.dicom.codecs import JPEG_XL_SYNTAXES

JPEG_XL_LOSSLESS = UID("1.2.840.10008.1.2.4.110")
JPEG_XL_JPEG_RECOMPRESSION = UID("1.2.840.10008.1.2.4.111")
JPEG_XL = UID("1.2.840.10008.1.2.4.112")
MPEG2_MAIN_LEVEL = UID("1.2.840.10008.1.2.4.100")
MPEG2_HIGH_LEVEL = UID("1.2.840.10008.1.2.4.101")
H264_HIGH_41 = UID("1.2.840.10008.1.2.4.102")
H264_HIGH_41_BD = UID("1.2.840.10008.1.2.4.103")
H264_HIGH_42_2D = UID("1.2.840.10008.1.2.4.104")
HEVC_MAIN = UID("1.2.840.10008.1.2.4.107")
HEVC_MAIN_10 = UID("1.2.840.10008.1.2.4.108")

#: Every syntax :func:`transcode` writes, in the order of the UIDs.
CODEC_SYNTAXES: tuple[UID, ...] = (
    MPEG2_MAIN_LEVEL,
    MPEG2_HIGH_LEVEL,
    H264_HIGH_41,
    H264_HIGH_41_BD,
    H264_HIGH_42_2D,
    HEVC_MAIN,
    HEVC_MAIN_10,
    JPEG_XL_LOSSLESS,
    JPEG_XL_JPEG_RECOMPRESSION,
    JPEG_XL,
)
#: The butteraugli distance of lossy JPEG XL: 1.0 is libjxl's "visually lossless".
JPEG_XL_DISTANCE = 1.0
JPEG_XL_LOSSLESS_EFFORT = 3
"""libjxl's effort for lossless frames: the same pixels as its default (7) in about a
twentieth of the time, for a few percent more bytes (measured on synth cines)."""
JPEG_QUALITY = 90
VIDEO_FRAME_RATE = 25
"""Frames per second of the video streams (a rate MPEG-2 allows); Frame Time stays as written."""


class VideoContainer(StrEnum):
    """How the video bit stream is packed into the Pixel Data."""

    ELEMENTARY = "es"
    TRANSPORT_STREAM = "mpegts"
    MP4 = "mp4"
    PROGRAM_STREAM = "ps"


# One thread, and no SEI naming the CPU's features: the same bytes on every machine (x264
# and x265 write their options, thread counts included, into the stream).
_X265 = "level-idc=5.1:log-level=error:frame-threads=1:pools=none:info=0"
# x264's C code, not its assembly: with the assembly, an H.264 stream encoded after an HEVC
# one in the same process came out different in about 1 run in 3 (the same input, one
# thread; stable with asm=0, mbtree=0 or aq-mode=0), so the same seed gave other bytes.
_X264 = "asm=0"
# The quality scanners store cine at, about JPEG quality 90 on speckle: a mean error of
# 2-2.5 levels inside the sector, measured on synth cines (the encoders' defaults, x264 crf
# 23, x265 crf 28 and mpeg2video's 200 kbit/s, lose 5-7.5).
_QUALITY = {"mpeg2video": {"b": "8M"}, "libx264": {"crf": "15"}, "libx265": {"crf": "16"}}
_RATE_CONTROL = frozenset({"crf", "qp", "b", "qscale", "global_quality"})
# (PyAV encoder, pixel format, options, DICOM method name) per video syntax.
_VIDEO: dict[UID, tuple[str, str, dict[str, str], str]] = {
    MPEG2_MAIN_LEVEL: ("mpeg2video", "yuv420p", {"profile": "4", "level": "8"}, "ISO_13818_2"),
    MPEG2_HIGH_LEVEL: ("mpeg2video", "yuv420p", {"profile": "4", "level": "4"}, "ISO_13818_2"),
    H264_HIGH_41: (
        "libx264",
        "yuv420p",
        {"profile": "high", "level": "4.1", "x264-params": _X264},
        "ISO_14496_10",
    ),
    H264_HIGH_41_BD: (
        "libx264",
        "yuv420p",
        {"profile": "high", "level": "4.1", "x264-params": f"bluray-compat=1:{_X264}"},
        "ISO_14496_10",
    ),
    H264_HIGH_42_2D: (
        "libx264",
        "yuv420p",
        {"profile": "high", "level": "4.2", "x264-params": _X264},
        "ISO_14496_10",
    ),
    HEVC_MAIN: ("libx265", "yuv420p", {"profile": "main", "x265-params": _X265}, "ISO_23008_2"),
    HEVC_MAIN_10: (
        "libx265",
        "yuv420p10le",
        {"profile": "main10", "x265-params": _X265},
        "ISO_23008_2",
    ),
}
_MUXERS = {
    VideoContainer.ELEMENTARY: "",
    VideoContainer.TRANSPORT_STREAM: "mpegts",
    VideoContainer.MP4: "mp4",
    VideoContainer.PROGRAM_STREAM: "vob",
}
_ELEMENTARY_MUXERS = {"mpeg2video": "mpeg2video", "libx264": "h264", "libx265": "hevc"}


def transcode(
    data: bytes,
    syntax: str,
    *,
    container: VideoContainer | str = VideoContainer.ELEMENTARY,
    video_options: dict[str, str] | None = None,
) -> bytes:
    """Return ``data`` (one 8-bit synth instance) re-encoded in ``syntax`` as a Part 10 file.

    Parameters
    ----------
    data : bytes
        A Part 10 file or a bare data set whose pixels pydicom decodes: MONOCHROME2, RGB,
        YBR_FULL_422 or PALETTE COLOR, 8 bits.
    syntax : str
        One of :data:`CODEC_SYNTAXES`.
    container : VideoContainer or str, optional
        For the video syntaxes: the elementary stream (default), ``"mpegts"``, ``"mp4"``
        or ``"ps"`` (MPEG-2 only).
    video_options : dict, optional
        Extra encoder options for the video syntaxes, such as ``{"qp": "1"}`` for x264 or
        ``{"x265-params": "lossless=1"}``. A rate control option (``crf``, ``qp``, ``b``,
        ``qscale``, ``global_quality``) replaces synth's own quality (x264 crf 15, x265 crf
        16, MPEG-2 at 8 Mbit/s).

    Returns
    -------
    bytes
        The same header with the new Image Pixel module, lossy compression attributes and
        encapsulated Pixel Data.

    Raises
    ------
    ValueError
        An unknown syntax or container, a source that is not 8-bit, or a video frame with an
        odd number of rows or columns (4:2:0 chroma needs even sizes).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> from usdcm.dicom.pixels import decode_frames
    >>> with open(get_testdata_file("examples_palette.dcm"), "rb") as source:
    ...     jxl = transcode(source.read(), JPEG_XL_LOSSLESS)
    >>> decode_frames(pydicom.dcmread(io.BytesIO(jxl))).shape
    (1, 350, 800)
    """
    syntax = UID(syntax)
    if syntax not in CODEC_SYNTAXES:
        message = f"synth cannot write transfer syntax {syntax}"
        raise ValueError(message)
    container = VideoContainer(container)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), force=True)  # synth also writes bare data sets
        if "TransferSyntaxUID" not in ds.get("file_meta", {}):
            implicit, _little = ds.original_encoding
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
            )
        frames, photometric = _source_frames(ds)
    for keyword in ("PlanarConfiguration", "LossyImageCompressionRatio"):
        if keyword in ds:
            delattr(ds, keyword)
    if syntax in JPEG_XL_SYNTAXES:
        encoded = _jpegxl_frames(ds, frames, photometric, syntax)
        ds.PixelData = encapsulate(encoded)
    else:
        stream = _video_stream(ds, frames, photometric, syntax, container, video_options or {})
        ds.PixelData = encapsulate([stream], has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return _part10(ds, syntax)


def _source_frames(ds: Dataset) -> tuple[NDArray[np.uint8], str]:
    """(frames, rows, columns[, 3]) 8-bit values and their photometric: gray, RGB or
    palette indices; YBR_FULL_422 is already RGB after pydicom's decoding."""
    if int(ds.BitsAllocated) != 8:
        message = f"synth transcodes 8-bit images only, not Bits Allocated {ds.BitsAllocated}"
        raise ValueError(message)
    pixels: NDArray[Any] = ds.pixel_array
    photometric = str(ds.PhotometricInterpretation)
    if photometric.startswith("YBR"):
        photometric = "RGB"
    samples = 3 if photometric == "RGB" else 1
    if pixels.ndim == 2 or (samples == 3 and pixels.ndim == 3):
        pixels = pixels[np.newaxis]
    return np.ascontiguousarray(pixels, dtype=np.uint8), photometric


def _rgb(ds: Dataset, frames: NDArray[np.uint8], photometric: str) -> NDArray[np.uint8]:
    """The frames as 8-bit RGB: gray repeated, palette indices through their table."""
    if photometric == "RGB":
        return frames
    if photometric == "PALETTE COLOR":
        table: NDArray[Any] = apply_color_lut(frames, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return (table >> (bits - 8)).astype(np.uint8) if bits > 8 else table.astype(np.uint8)
    return np.repeat(frames[..., np.newaxis], 3, axis=-1)


def _pixel_module(ds: Dataset, photometric: str, samples: int, bits_stored: int = 8) -> None:
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0


def _drop_palette(ds: Dataset) -> None:
    for colour in ("Red", "Green", "Blue"):
        for kind in ("Descriptor", "Data"):
            keyword = f"{colour}PaletteColorLookupTable{kind}"
            if keyword in ds:
                delattr(ds, keyword)


def _lossy(ds: Dataset, method: str) -> None:
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = method


def _jpegxl_frames(
    ds: Dataset, frames: NDArray[np.uint8], photometric: str, syntax: UID
) -> list[bytes]:
    import imagecodecs

    if syntax == JPEG_XL_LOSSLESS:
        samples = 3 if photometric == "RGB" else 1
        _pixel_module(ds, photometric, samples)
        return [
            bytes(imagecodecs.jpegxl_encode(frame, lossless=True, effort=JPEG_XL_LOSSLESS_EFFORT))
            for frame in frames
        ]
    gray = photometric == "MONOCHROME2"
    source = frames if gray else _rgb(ds, frames, photometric)
    _drop_palette(ds)  # lossy codecs never carry palette indices
    if syntax == JPEG_XL:
        _pixel_module(ds, "MONOCHROME2" if gray else "RGB", 1 if gray else 3)
        _lossy(ds, "ISO_18181_1")
        return [
            bytes(imagecodecs.jpegxl_encode(frame, distance=JPEG_XL_DISTANCE)) for frame in source
        ]
    _pixel_module(ds, "MONOCHROME2" if gray else "YBR_FULL_422", 1 if gray else 3)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = ["ISO_10918_1", "ISO_18181_1"]
    encoded = []
    for frame in source:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=1)
        encoded.append(bytes(imagecodecs.jpegxl_encode_jpeg(buffer.getvalue())))
    return encoded


def _video_stream(
    ds: Dataset,
    frames: NDArray[np.uint8],
    photometric: str,
    syntax: UID,
    container: VideoContainer,
    options: dict[str, str],
) -> bytes:
    """Encode ``frames`` (gray, RGB or palette indices, 8-bit) as one video bit stream, and
    set ``ds``'s Image Pixel module and lossy compression attributes to match it."""
    import av

    encoder, pixel_format, defaults, method = _VIDEO[syntax]
    if container is VideoContainer.PROGRAM_STREAM and encoder != "mpeg2video":
        message = "an MPEG-2 program stream carries MPEG-2 video only"
        raise ValueError(message)
    rgb = _rgb(ds, frames, photometric)
    count, rows, columns = rgb.shape[:3]
    if rows % 2 or columns % 2:
        message = f"4:2:0 video needs even rows and columns, not {rows} x {columns}"
        raise ValueError(message)
    deep = pixel_format.endswith("10le")
    buffer = io.BytesIO()
    muxer = _MUXERS[container] or _ELEMENTARY_MUXERS[encoder]
    with av.open(buffer, mode="w", format=muxer) as output:
        stream = output.add_stream(encoder, rate=Fraction(VIDEO_FRAME_RATE))
        assert isinstance(stream, av.VideoStream)  # a video encoder gives a video stream
        stream.width, stream.height, stream.pix_fmt = columns, rows, pixel_format
        quality = {} if options.keys() & _RATE_CONTROL else _QUALITY[encoder]
        stream.options = {**quality, **defaults, **options}
        stream.codec_context.thread_count = 1
        for index in range(count):
            # rgb24 also for Main 10: swscale's rgb48le -> yuv420p10le path is biased
            # (+1.6 of 876 luma levels, measured); from rgb24 it is within 0.02.
            source = av.VideoFrame.from_ndarray(rgb[index], format="rgb24")
            for packet in stream.encode(source):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    _drop_palette(ds)
    _pixel_module(ds, "YBR_PARTIAL_420", 3, 10 if deep else 8)
    ds.NumberOfFrames = count
    _lossy(ds, method)
    return buffer.getvalue()


def _part10(ds: Dataset, syntax: UID) -> bytes:
    """A Part 10 file in ``syntax``, written without asking pydicom 3.0 about the syntax
    (it does not know JPEG XL); every one of these syntaxes is explicit VR little endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    if hasattr(ds, "file_meta"):
        del ds.file_meta
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    return bytes(buffer.getvalue())
