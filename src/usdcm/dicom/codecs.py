"""Decoders for the transfer syntaxes pydicom 3.0 cannot decode: JPEG XL and video.

Owns JPEG XL (1.2.840.10008.1.2.4.110/.111/.112), decoded frame by frame through
``imagecodecs`` (libjxl), and the video syntaxes MPEG-2 (.100/.101), MPEG-4 AVC/H.264
(.102-.106) and HEVC/H.265 (.107/.108), with their fragmentable variants, decoded through
PyAV (FFmpeg). :mod:`usdcm.dicom.pixels` calls these behind its one decode interface; this
module never reads files, never converts colour beyond the codec's own output and never
touches the manifest. Every failure is a :class:`~usdcm.errors.DecodeError` whose message
names only technical facts.

Video in DICOM
--------------
The encapsulated Pixel Data of a video syntax holds one bit stream across all its fragments,
not one fragment per frame. Depending on the edition of the standard and the writer, that
stream is an MPEG-2 program stream or elementary stream (MPEG-2), an Annex B byte stream
(H.264, HEVC), an MPEG-2 transport stream or an MP4 file. The container is recognised from
its first bytes and opened with that one FFmpeg demuxer only, never by FFmpeg's own probing
(which could pick a demuxer that opens other files or URLs). The stream must carry the codec
its transfer syntax names.

Frame count
-----------
The decoded frames must match Number of Frames exactly, and arrive in presentation order
(strictly increasing timestamps where the container has them). A stream with fewer or more
frames is **excluded with a reason**, not truncated: Number of Frames, Frame Time and the
cine's regions describe the declared frames, a short stream is most often a truncated file,
and every other syntax usdcm reads is held to the same rule. The frame that first breaks the
count stops decoding, so an oversized stream is never decoded to its end.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.uid import UID

from usdcm.errors import DecodeError

#: JPEG XL Lossless, JPEG XL JPEG Recompression, JPEG XL.
JPEG_XL_SYNTAXES = frozenset(
    UID(uid)
    for uid in ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112")
)

_MPEG2 = ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101")
_AVC = tuple(f"1.2.840.10008.1.2.4.{number}" for number in range(102, 107))
_HEVC = ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108")
_FRAGMENTABLE = (*_MPEG2, *_AVC)  # the .1 variants registered in DICOM 2020

#: FFmpeg decoders accepted for each video syntax.
_VIDEO_CODECS: dict[UID, frozenset[str]] = {
    **{UID(uid): frozenset({"mpeg2video", "mpeg1video"}) for uid in _MPEG2},
    **{UID(uid): frozenset({"h264"}) for uid in _AVC},
    **{UID(uid): frozenset({"hevc"}) for uid in _HEVC},
    **{UID(f"{uid}.1"): frozenset({"mpeg2video", "mpeg1video"}) for uid in _MPEG2},
    **{UID(f"{uid}.1"): frozenset({"h264"}) for uid in _AVC},
}
#: Every video transfer syntax PyAV decodes here.
VIDEO_SYNTAXES = frozenset(_VIDEO_CODECS)

#: The library that decodes each family, for messages and the README.
JPEG_XL_LIBRARY = "imagecodecs"
VIDEO_LIBRARY = "PyAV"

_JXL_CODESTREAM = b"\xff\x0a"
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
# (numerator, denominator) of the JPEG XL SizeHeader aspect ratios 1..7 (ISO/IEC 18181-1).
_JXL_RATIOS = ((1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))
_TS_PACKET = 188
# FFmpeg's planar 4:4:4 formats by bit depth: the chroma brought to full size, depth kept.
_PLANAR_444 = {
    8: "yuv444p",
    9: "yuv444p9le",
    10: "yuv444p10le",
    12: "yuv444p12le",
    16: "yuv444p16le",
}


def codec_library(syntax: str) -> str | None:
    """The library that decodes ``syntax`` in this module, or ``None`` if it is pydicom's.

    Examples
    --------
    >>> codec_library("1.2.840.10008.1.2.4.112"), codec_library("1.2.840.10008.1.2.4.102.1")
    ('imagecodecs', 'PyAV')
    >>> codec_library("1.2.840.10008.1.2.4.50") is None
    True
    """
    if syntax in JPEG_XL_SYNTAXES:
        return JPEG_XL_LIBRARY
    if syntax in VIDEO_SYNTAXES:
        return VIDEO_LIBRARY
    return None


# --- JPEG XL -------------------------------------------------------------------------------


def jpegxl_available() -> bool:
    """Whether the installed ``imagecodecs`` was built with libjxl."""
    try:
        import imagecodecs
    except ImportError:  # pragma: no cover - a declared dependency
        return False
    return bool(imagecodecs.JPEGXL.available)


def decode_jpegxl(frame: bytes) -> NDArray[Any]:
    """Decode one JPEG XL frame (a codestream or a JPEG XL container).

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` or ``(rows, columns, 3)`` in the codestream's own bit depth
        (``uint8`` or ``uint16``), as libjxl reconstructs it: RGB for colour, also when the
        frame is a recompressed JPEG.

    Raises
    ------
    DecodeError
        If ``imagecodecs`` lacks JPEG XL or libjxl cannot decode the frame.
    """
    if not jpegxl_available():
        message = "no decoder for JPEG XL is installed: install imagecodecs (with libjxl)"
        raise DecodeError(message)
    import imagecodecs

    try:
        decoded: NDArray[Any] = imagecodecs.jpegxl_decode(frame, numthreads=1)
    except Exception as err:  # imagecodecs.JpegxlError and whatever libjxl bubbles up
        message = f"libjxl cannot decode the frame ({type(err).__name__})"
        raise DecodeError(message) from err
    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[..., 0]
    if decoded.ndim == 3 and decoded.shape[2] == 4:  # an alpha channel carries no image
        decoded = decoded[..., :3]
    if decoded.dtype.kind == "f":
        message = "the JPEG XL frame holds floating point samples, which usdcm does not read"
        raise DecodeError(message)
    return decoded


def jpegxl_shape(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) that a JPEG XL frame declares, read from its SizeHeader alone.

    Lets the caller refuse a frame whose declared size differs from the DICOM header before
    libjxl allocates it. Applies the orientation of the image metadata (orientations 5-8
    swap rows and columns, as libjxl's output does). ``None`` if the bytes are not a JPEG XL
    codestream or container, or are too short to say.

    Examples
    --------
    A codestream of 64 rows x 80 columns uses the "small" size fields (multiples of 8):

    >>> jpegxl_shape(bytes.fromhex("ff0a8f4150dc"))
    (64, 80)
    >>> jpegxl_shape(b"not jxl") is None
    True
    """
    codestream = _jxl_codestream(frame)
    if codestream is None:
        return None
    reader = _BitReader(codestream[2:34])
    try:
        small = reader.bits(1)
        rows = (reader.bits(5) + 1) * 8 if small else _jxl_u32(reader)
        ratio = reader.bits(3)
        if ratio:
            numerator, denominator = _JXL_RATIOS[ratio - 1]
            columns = rows * numerator // denominator
        else:
            columns = (reader.bits(5) + 1) * 8 if small else _jxl_u32(reader)
        orientation = 1
        if not reader.bits(1) and reader.bits(1):  # not all_default, extra_fields
            orientation = 1 + reader.bits(3)
    except IndexError:
        return None
    return (columns, rows) if orientation > 4 else (rows, columns)


def _jxl_codestream(data: bytes) -> bytes | None:
    """The bare codestream: ``data`` itself, or the content of its first jxlc/jxlp box."""
    if data.startswith(_JXL_CODESTREAM):
        return data
    if not data.startswith(_JXL_CONTAINER):
        return None
    position = 0
    while position + 8 <= len(data):
        size = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        header = 8
        if size == 1 and position + 16 <= len(data):
            size = int.from_bytes(data[position + 8 : position + 16], "big")
            header = 16
        body = position + header
        if kind == b"jxlc":
            return data[body:] if data[body:].startswith(_JXL_CODESTREAM) else None
        if kind == b"jxlp":  # a partial codestream box starts with a 4-byte index
            return data[body + 4 :] if data[body + 4 :].startswith(_JXL_CODESTREAM) else None
        if size < header:  # 0 means "to the end of the file": no codestream box follows
            return None
        position += size
    return None


def _jxl_u32(reader: _BitReader) -> int:
    """A SizeHeader dimension: a 2-bit selector of 9, 13, 18 or 30 bits, plus one."""
    return reader.bits((9, 13, 18, 30)[reader.bits(2)]) + 1


class _BitReader:
    """Reads JPEG XL's bit fields: least significant bit of each byte first."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0

    def bits(self, count: int) -> int:
        value = 0
        for shift in range(count):
            byte = self._data[self._position >> 3]  # IndexError past the end
            value |= ((byte >> (self._position & 7)) & 1) << shift
            self._position += 1
        return value


# --- video ---------------------------------------------------------------------------------


def video_frames(
    data: bytes, syntax: UID, *, rows: int, columns: int, bits_stored: int
) -> Iterator[NDArray[Any]]:
    """Decode a DICOM video bit stream (all fragments joined) frame by frame, as RGB.

    Parameters
    ----------
    data : bytes
        The whole stream: every fragment of the encapsulated Pixel Data, in order.
    syntax : pydicom.uid.UID
        One of :data:`VIDEO_SYNTAXES`; the stream must carry its codec.
    rows, columns : int
        The header's Rows and Columns. The stream must declare the same size: the regions
        and the calibration refer to them. It is checked before the first frame is decoded.
    bits_stored : int
        8 gives ``uint8`` RGB; 9 to 16 give ``uint16`` scaled to that depth (HEVC Main 10).

    Yields
    ------
    numpy.ndarray
        ``(rows, columns, 3)`` RGB frames, rounded to nearest (see :func:`_frame_rgb`), in
        presentation order; the caller counts them against Number of Frames.

    Raises
    ------
    DecodeError
        If PyAV is missing, the container is not one DICOM allows, the stream has no video,
        another codec, another size or frames out of order, or FFmpeg cannot decode it.
    """
    try:
        import av
    except ImportError as err:  # pragma: no cover - a declared dependency
        message = "no decoder for video transfer syntaxes is installed: install av (PyAV)"
        raise DecodeError(message) from err

    label = _video_label(syntax)
    demuxer = _video_demuxer(data, syntax)
    try:
        container = av.open(io.BytesIO(data), mode="r", format=demuxer)
    except Exception as err:  # av.FFmpegError subclasses, and ValueError for bad options
        message = f"FFmpeg cannot open the {label} stream as {demuxer} ({type(err).__name__})"
        raise DecodeError(message) from err
    with container:
        if not container.streams.video:
            message = f"the {label} Pixel Data holds no video stream ({demuxer})"
            raise DecodeError(message)
        stream = container.streams.video[0]
        context = stream.codec_context
        codec = context.name
        if codec not in _VIDEO_CODECS[syntax]:
            expected = " or ".join(sorted(_VIDEO_CODECS[syntax]))
            message = f"the {label} Pixel Data holds {codec} video, not {expected}"
            raise DecodeError(message)
        _check_video_size(int(context.width), int(context.height), rows, columns, label)
        context.thread_count = 1  # one core per worker: ingest runs one worker per core
        index = 0
        last_pts: int | None = None
        decoded = container.decode(stream)
        while True:
            try:
                frame = next(decoded, None)
            except Exception as err:  # av.FFmpegError subclasses
                message = f"FFmpeg cannot decode frame {index + 1} of the {label} stream"
                raise DecodeError(f"{message} ({type(err).__name__})") from err
            if frame is None:
                return
            _check_video_size(frame.width, frame.height, rows, columns, label)
            if frame.pts is not None:
                if last_pts is not None and frame.pts <= last_pts:
                    message = (
                        f"frame {index + 1} of the {label} stream is out of presentation "
                        "order (its timestamp does not follow the previous frame's)"
                    )
                    raise DecodeError(message)
                last_pts = int(frame.pts)
            index += 1
            yield _frame_rgb(frame, bits_stored)


def _frame_rgb(frame: Any, bits_stored: int) -> NDArray[Any]:
    """One decoded frame as RGB at ``bits_stored`` bits, rounded to nearest.

    Y'CbCr is converted here rather than by FFmpeg's swscale, whose conversion rounds down
    (-0.48 levels on average, measured): the chroma planes are brought to full resolution
    (the only resampling, done by swscale), then BT.601 (or BT.709 where the stream signals
    it) in the stream's range (limited unless it signals full), in floating point.
    """
    depth = max(int(component.bits) for component in frame.format.components)
    depth = depth if depth in _PLANAR_444 else 16
    full = frame.reformat(format=_PLANAR_444[depth])  # the depth kept: no rescaling
    deep = depth > 8
    dtype = np.dtype("<u2") if deep else np.dtype(np.uint8)
    planes = [
        np.frombuffer(plane, dtype).reshape(plane.height, -1)[:, : plane.width]
        for plane in full.planes[:3]
    ]
    luma, cb, cr = (plane.astype(np.float32) for plane in planes)
    unit = float(1 << (depth - 8))  # one 8-bit level in the plane's scale
    if int(frame.color_range) == 2:  # full range (JPEG)
        luma_scale, chroma_scale, black = 255.0 * unit, 255.0 * unit, 0.0
    else:
        luma_scale, chroma_scale, black = 219.0 * unit, 224.0 * unit, 16.0 * unit
    red_weight, blue_weight = (0.2126, 0.0722) if int(frame.colorspace) == 1 else (0.299, 0.114)
    green_weight = 1.0 - red_weight - blue_weight
    y = (luma - black) / luma_scale
    pb = (cb - 128.0 * unit) / chroma_scale
    pr = (cr - 128.0 * unit) / chroma_scale
    red = y + 2.0 * (1.0 - red_weight) * pr
    blue = y + 2.0 * (1.0 - blue_weight) * pb
    green = (
        y
        - (
            2.0 * (1.0 - blue_weight) * blue_weight * pb
            + 2.0 * (1.0 - red_weight) * red_weight * pr
        )
        / green_weight
    )
    top = float((1 << bits_stored) - 1)
    rgb = np.stack((red, green, blue), axis=-1)
    rgb = np.clip(np.rint(rgb * top), 0.0, top)
    result: NDArray[Any] = rgb.astype(np.uint8 if bits_stored <= 8 else np.uint16)
    return result


def _check_video_size(width: int, height: int, rows: int, columns: int, label: str) -> None:
    if width <= 0 or height <= 0 or (width, height) == (columns, rows):
        return  # 0: the demuxer has not read a sequence header yet; the frames will say
    message = (
        f"the {label} stream is {height} rows x {width} columns, but the header declares "
        f"Rows {rows}, Columns {columns}"
    )
    raise DecodeError(message)


def _video_label(syntax: UID) -> str:
    name = str(syntax.name) if syntax.name and syntax.name != syntax else "video"
    return f"{name} ({syntax})"


def _video_demuxer(data: bytes, syntax: UID) -> str:
    """The one FFmpeg demuxer for ``data``, chosen from its first bytes.

    MPEG-2 transport stream (a sync byte every 188 bytes), MP4 (an ``ftyp`` box), MPEG
    program stream (a pack header), otherwise an elementary stream of the codec its first
    unit names (so that a mislabelled stream is refused for its codec), else the syntax's.
    """
    if len(data) >= 2 * _TS_PACKET and data[0] == data[_TS_PACKET] == 0x47:
        return "mpegts"
    if data[4:8] == b"ftyp":
        return "mp4"
    if data.startswith(b"\x00\x00\x01\xba"):
        return "mpeg"
    codec = _elementary_codec(data)
    if codec is None:
        codecs = _VIDEO_CODECS[syntax]
        codec = "h264" if "h264" in codecs else "hevc" if "hevc" in codecs else "mpeg2video"
    return {"h264": "h264", "hevc": "hevc"}.get(codec, "mpegvideo")


def _elementary_codec(data: bytes) -> str | None:
    """The codec of an elementary stream, from its first start code and unit header:
    an MPEG-2 sequence header, an HEVC parameter set or access unit delimiter, or an H.264
    one. ``None`` when the first unit says nothing (the syntax's codec is then assumed)."""
    start = data.find(b"\x00\x00\x01", 0, 64)
    if start < 0 or start + 5 > len(data):
        return None
    first, second = data[start + 3], data[start + 4]
    if first == 0xB3:  # sequence_header_code
        return "mpeg2video"
    if first & 0x80:  # forbidden_zero_bit of a NAL unit header
        return None
    if (first >> 1) & 0x3F in (32, 33, 34, 35) and second & 0x07 != 0:  # nuh_temporal_id + 1
        return "hevc"
    if first & 0x1F in (7, 8, 9):  # sequence or picture parameter set, access unit delimiter
        return "h264"
    return None
