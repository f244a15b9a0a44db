"""Decode the pixel data of one SOP instance into frames of B-mode gray levels.

Owns decoding (every transfer syntax that pydicom 3 decodes by itself or with the pylibjpeg
plugins, and JPEG XL and video through :mod:`usdcm.dicom.codecs`), the conversion of every
photometric interpretation to one BT.601 luminance channel, the crop to an ultrasound region
and the NIfTI voxel layout. Never reads files, never chooses the region and never touches the
manifest. Error messages name only technical facts (transfer
syntax, image geometry), never a header value that could identify a patient.

Conventions
-----------
* Frames are ``(frames, rows, columns)`` for gray and ``(frames, rows, columns, 3)`` for
  colour, in the order of the Pixel Data, with ``frames == 1`` for a single-frame image.
* The dtype follows Bits Stored: ``uint8`` up to 8 bits, ``uint16`` up to 16 bits (values are
  never rescaled, so nothing is lost). Signed pixels are offset by ``2 ** (BitsStored - 1)``
  into the unsigned range, which keeps their order.
* Luminance is ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601), computed exactly in integers
  and rounded half up.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments, generate_frames, parse_basic_offsets
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.pixels.processing import apply_color_lut
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from usdcm.dicom.codecs import (
    JPEG_XL_SYNTAXES,
    VIDEO_SYNTAXES,
    codec_library,
    decode_jpegxl,
    jpegxl_shape,
    video_frames,
)
from usdcm.dicom.regions import UltrasoundRegion
from usdcm.errors import DecodeError

ScalarT = TypeVar("ScalarT", bound=np.generic)
UIntT = TypeVar("UIntT", bound=np.unsignedinteger[Any])

#: The decoding plugin tried first when the caller names none; the others follow if it fails.
PREFERRED_PLUGIN = "pylibjpeg"

#: Names of transfer syntaxes that pydicom 3.0 does not know by name.
_SYNTAX_NAMES: dict[str, str] = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}

_GRAY = ("MONOCHROME1", "MONOCHROME2")
_YBR_FULL = ("YBR_FULL", "YBR_FULL_422")
"""Colour whose first sample is already the BT.601 luminance (PS3.3 C.7.6.3.1.2)."""
_SUPPORTED_PHOTOMETRIC = (
    *_GRAY,
    "RGB",
    "PALETTE COLOR",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
)
# What the video syntaxes declare (PS3.5 8.2.5-8.2.9); FFmpeg decodes it to RGB.
_VIDEO_PHOTOMETRIC = ("YBR_PARTIAL_420",)
_FrameItems = Iterator[tuple[NDArray[Any], dict[str, str | int]]]
# JPEG start-of-frame markers (ITU T.81 B.1.1.3) and JPEG-LS SOF55 (ITU T.87).
_SOF_MARKERS = frozenset(
    (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7)
)
# Markers without a length field: TEM, RST0..RST7 and SOI.
_STANDALONE_MARKERS = frozenset((0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8))
_Y_WEIGHTS = (299, 587, 114)  # BT.601 luma weights, in thousandths


@dataclass(frozen=True)
class _PixelModule:
    """What the Image Pixel module declares; only technical values, safe to quote."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str

    @property
    def out_dtype(self) -> np.dtype[Any]:
        """``uint8`` up to 8 bits stored, ``uint16`` above."""
        return np.dtype(np.uint8) if self.bits_stored <= 8 else np.dtype(np.uint16)

    @property
    def max_value(self) -> int:
        """The largest unsigned value Bits Stored can hold."""
        return (1 << self.bits_stored) - 1

    def geometry(self) -> str:
        """The declared geometry, for error messages."""
        return (
            f"Rows {self.rows}, Columns {self.columns}, Number of Frames {self.frames}, "
            f"Samples per Pixel {self.samples}, Bits Allocated {self.bits_allocated}"
        )


def syntax_label(uid: str) -> str:
    """Name a transfer syntax for a message: its registered name and its UID.

    Examples
    --------
    >>> syntax_label("1.2.840.10008.1.2.4.50")
    'JPEG Baseline (Process 1) (1.2.840.10008.1.2.4.50)'
    >>> syntax_label("1.2.840.10008.1.2.4.112")
    'JPEG XL (1.2.840.10008.1.2.4.112)'
    >>> syntax_label("1.2.3.4")
    'unknown transfer syntax (1.2.3.4)'
    """
    name = _SYNTAX_NAMES.get(uid) or str(UID(uid).name)
    if not name or name == uid:
        name = "unknown transfer syntax"
    return f"{name} ({uid})"


def to_grayscale(rgb: NDArray[UIntT]) -> NDArray[UIntT]:
    """Return the BT.601 luminance ``0.299 R + 0.587 G + 0.114 B`` of ``rgb``.

    Parameters
    ----------
    rgb : numpy.ndarray
        Unsigned integers with the colour on the last axis, ``(..., 3)``.

    Returns
    -------
    numpy.ndarray
        ``rgb.shape[:-1]``, same dtype; computed exactly in integers and rounded half up.
        Works frame by frame on 4-D input, so the temporaries stay the size of one frame.

    Raises
    ------
    ValueError
        If the last axis does not hold 3 samples or the dtype is not an unsigned integer.

    Examples
    --------
    >>> to_grayscale(np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8))
    array([ 76, 150,  29,   9], dtype=uint8)
    """
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        message = f"expected colour samples on the last axis (..., 3), got shape {rgb.shape}"
        raise ValueError(message)
    if rgb.dtype.kind != "u":
        message = f"expected unsigned integer samples, got {rgb.dtype}"
        raise ValueError(message)
    out: NDArray[UIntT] = np.empty(rgb.shape[:-1], dtype=rgb.dtype)
    blocks = range(rgb.shape[0]) if rgb.ndim >= 4 else [Ellipsis]
    for block in blocks:
        source = rgb[block]
        luma = np.multiply(source[..., 0], _Y_WEIGHTS[0], dtype=np.int32)
        luma += np.multiply(source[..., 1], _Y_WEIGHTS[1], dtype=np.int32)
        luma += np.multiply(source[..., 2], _Y_WEIGHTS[2], dtype=np.int32)
        luma += 500
        luma //= 1000
        out[block] = luma
    return out


def crop_frames(frames: NDArray[ScalarT], region: UltrasoundRegion | None) -> NDArray[ScalarT]:
    """Crop ``frames`` to ``region``'s inclusive box: columns ``x0..x1``, rows ``y0..y1``.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(frames, rows, columns)`` or ``(frames, rows, columns, 3)``.
    region : UltrasoundRegion or None
        The box, already clipped to the image (see :meth:`UltrasoundRegion.clipped`);
        ``None`` keeps the whole image.

    Returns
    -------
    numpy.ndarray
        A view on ``frames`` (no copy).

    Raises
    ------
    ValueError
        If ``frames`` is not 3-D or 4-D, or the box is empty or reaches outside the image.

    Examples
    --------
    >>> frames = np.arange(2 * 4 * 5).reshape(2, 4, 5)
    >>> box = UltrasoundRegion(x0=1, y0=2, x1=3, y1=3, spatial_format=1)
    >>> crop_frames(frames, box)[1]
    array([[31, 32, 33],
           [36, 37, 38]])
    """
    if frames.ndim not in (3, 4):
        message = f"expected (frames, rows, columns[, 3]), got shape {frames.shape}"
        raise ValueError(message)
    if region is None:
        return frames
    rows, columns = frames.shape[1], frames.shape[2]
    inside = 0 <= region.x0 <= region.x1 < columns and 0 <= region.y0 <= region.y1 < rows
    if not inside:
        message = (
            f"crop box {region.as_crop()} (x0,y0,x1,y1) is empty or outside an image of "
            f"{rows} rows x {columns} columns; clip it first"
        )
        raise ValueError(message)
    return frames[:, region.y0 : region.y1 + 1, region.x0 : region.x1 + 1]


def frames_to_volume(frames: NDArray[ScalarT]) -> NDArray[ScalarT]:
    """Lay ``frames`` out as a NIfTI voxel array: ``volume[i, j, k]`` is column ``i``, row ``j``
    of frame ``k``.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(frames, rows, columns)`` or ``(frames, rows, columns, 3)``.

    Returns
    -------
    numpy.ndarray
        ``(columns, rows, frames)`` or ``(columns, rows, frames, 3)``, a transposed view
        (no copy).

    Raises
    ------
    ValueError
        If ``frames`` is not 3-D or 4-D.

    Examples
    --------
    Mark the pixel at frame 2, row 1, column 4 of an image with 3 frames of 2 rows
    and 5 columns:

    >>> frames = np.zeros((3, 2, 5), dtype=np.uint8)
    >>> frames[2, 1, 4] = 255
    >>> volume = frames_to_volume(frames)
    >>> volume.shape
    (5, 2, 3)
    >>> [int(axis[0]) for axis in np.nonzero(volume)]
    [4, 1, 2]
    """
    if frames.ndim == 3:
        return frames.transpose(2, 1, 0)
    if frames.ndim == 4:
        return frames.transpose(2, 1, 0, 3)
    message = f"expected (frames, rows, columns[, 3]), got shape {frames.shape}"
    raise ValueError(message)


def decode_frames(
    dataset: Dataset, *, keep_color: bool = False, plugin: str = ""
) -> NDArray[np.unsignedinteger[Any]]:
    """Decode every frame of ``dataset`` to gray levels (or RGB), in frame order.

    Parameters
    ----------
    dataset : pydicom.dataset.Dataset
        A data set read with its Pixel Data and its file meta information (the transfer
        syntax comes from ``file_meta``, or from how the data set was read).
    keep_color : bool, optional
        If ``False`` (default), return one BT.601 luminance channel,
        ``(frames, rows, columns)``. If ``True``, return RGB, ``(frames, rows, columns, 3)``;
        gray images then repeat their level in all 3 channels.
    plugin : str, optional
        The pydicom decoding plugin to use, such as ``"pylibjpeg"`` or ``"pillow"``. By
        default :data:`PREFERRED_PLUGIN` is tried first and then every other installed one.
        JPEG XL is decoded by ``"imagecodecs"`` and video by ``"PyAV"`` only (see
        :mod:`usdcm.dicom.codecs`).

    Returns
    -------
    numpy.ndarray
        ``uint8`` for Bits Stored up to 8, ``uint16`` up to 16. Photometric interpretations
        map to RGB first: PALETTE COLOR through its lookup table (rescaled to the output
        depth), YBR_FULL, YBR_FULL_422, YBR_ICT and YBR_RCT by pydicom or the codec, once;
        MONOCHROME1 is inverted (``2 ** BitsStored - 1 - value``). Video (YBR_PARTIAL_420)
        is converted to RGB by FFmpeg. The gray levels of YBR_FULL and YBR_FULL_422 are
        their Y samples, which are the BT.601 luminance already: no round trip through
        RGB, which would clip colours outside its gamut (and costs a third of the decode).

    Raises
    ------
    DecodeError
        If no decoder is installed for the transfer syntax (the message says what to install),
        if the syntax cannot be decoded at all, if decoding fails, or if the decoded pixels do
        not match Rows, Columns, Number of Frames or Samples per Pixel. A video stream with
        more or fewer frames than Number of Frames is refused, not truncated.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> from pydicom import dcmread
    >>> frames = decode_frames(dcmread(get_testdata_file("examples_ybr_color.dcm")))
    >>> frames.shape, frames.dtype
    ((30, 240, 320), dtype('uint8'))
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings may quote header values
        syntax = _transfer_syntax(dataset)
        module = _pixel_module(dataset, video=syntax in VIDEO_SYNTAXES)
        library = codec_library(syntax)
        decoder = None if library else _decoder(syntax)
        if library and plugin and plugin != library:
            message = (
                f"decoding plugin {plugin!r} is not available for {syntax_label(syntax)} "
                f"(available: {library})"
            )
            raise DecodeError(message)
        _check_pixel_data(dataset, syntax, module)
        palette = None
        if module.photometric == "PALETTE COLOR":
            palette = _palette(dataset, module)
            palette = palette if keep_color else to_grayscale(palette)
        shape: tuple[int, ...] = (module.frames, module.rows, module.columns)
        out = np.empty((*shape, 3) if keep_color else shape, dtype=module.out_dtype)
        plugins = [library or ""] if decoder is None else _plugin_order(decoder, plugin)
        for attempt, name in enumerate(plugins):
            items: _FrameItems
            if decoder is None:
                items = _codec_items(dataset, syntax, module)
            else:
                as_rgb = keep_color or module.photometric not in _YBR_FULL
                items = decoder.iter_array(dataset, decoding_plugin=name, as_rgb=as_rgb)
            try:
                _decode_into(out, items, module, syntax, palette)
            except _PluginFailure as failure:
                if attempt + 1 < len(plugins):
                    continue
                raise DecodeError(str(failure)) from failure.__cause__
            break
    return out


class _PluginFailure(Exception):
    """A decoding plugin raised; another plugin may still succeed. Carries the message."""


def _codec_items(dataset: Dataset, syntax: UID, module: _PixelModule) -> _FrameItems:
    """Frames of a JPEG XL or video data set, each with the photometric it decoded to."""
    decoded_photometric = "RGB" if module.samples == 3 else module.photometric
    properties: dict[str, str | int] = {"photometric_interpretation": decoded_photometric}
    if syntax in JPEG_XL_SYNTAXES:
        for frame in generate_frames(dataset.PixelData, number_of_frames=module.frames):
            yield decode_jpegxl(frame), properties
        return
    stream = _video_stream(dataset.PixelData)
    for rgb in video_frames(
        stream,
        syntax,
        rows=module.rows,
        columns=module.columns,
        bits_stored=module.bits_stored,
    ):
        yield (rgb if module.samples == 3 else to_grayscale(rgb)), properties


def _video_stream(data: bytes) -> bytes:
    """The video bit stream: every fragment after the Basic Offset Table, joined."""
    buffer = io.BytesIO(data)
    try:
        parse_basic_offsets(buffer)
        stream = b"".join(generate_fragments(buffer))
    except Exception as err:  # malformed encapsulation: items, lengths, delimiters
        message = f"the encapsulated Pixel Data is malformed ({type(err).__name__})"
        raise DecodeError(message) from err
    if not stream:
        raise DecodeError("the encapsulated Pixel Data holds no video bit stream")
    return stream


def _decode_into(
    out: NDArray[np.unsignedinteger[Any]],
    frames: _FrameItems,
    module: _PixelModule,
    syntax: UID,
    palette: NDArray[np.unsignedinteger[Any]] | None,
) -> None:
    """Decode frame by frame into ``out``, so peak memory is ``out`` plus one frame."""
    expected = (module.rows, module.columns) + ((3,) if module.samples == 3 else ())
    index = 0
    while True:
        try:
            item = next(frames, None)
        except DecodeError:
            raise  # usdcm's own codecs: the message is already the reason
        except Exception as err:  # every plugin raises its own types
            detail = " ".join(str(err).split())[:300]  # pixel-level facts only
            message = (
                f"cannot decode frame {index + 1} of {module.frames} "
                f"({syntax_label(syntax)}): {type(err).__name__}"
                + (f": {detail}" if detail else "")
            )
            raise _PluginFailure(message) from err
        if item is None:
            break
        frame, properties = item
        if index >= module.frames:
            message = (
                f"the Pixel Data holds more frames than the header declares "
                f"({syntax_label(syntax)}; {module.geometry()})"
            )
            raise DecodeError(message)
        if frame.shape != expected:
            message = (
                f"frame {index + 1} decoded to shape {frame.shape}, but the header declares "
                f"{expected} ({module.geometry()})"
            )
            raise DecodeError(message)
        photometric = str(properties.get("photometric_interpretation", module.photometric))
        values = _unsigned(frame, module, index)
        _convert_frame(out[index], values, photometric, module, palette)
        index += 1
    if index != module.frames:
        message = (
            f"the Pixel Data holds {index} frame(s) but the header declares "
            f"{module.frames} ({syntax_label(syntax)})"
        )
        raise DecodeError(message)


def _convert_frame(
    target: NDArray[np.unsignedinteger[Any]],
    values: NDArray[np.unsignedinteger[Any]],
    photometric: str,
    module: _PixelModule,
    palette: NDArray[np.unsignedinteger[Any]] | None,
) -> None:
    """Write one frame of unsigned values into ``target``: luminance (2-D) or RGB (3-D).

    ``palette`` is the lookup table already in the target's form: RGB rows for an RGB target,
    luminance for a gray one.
    """
    keep_color = target.ndim == 3
    if photometric == "PALETTE COLOR" and palette is not None:
        target[...] = np.take(palette, values, axis=0, mode="clip")
    elif photometric in _GRAY:
        if photometric == "MONOCHROME1":
            values = np.subtract(module.max_value, values, dtype=values.dtype)
        target[...] = values[..., np.newaxis] if keep_color else values
    elif photometric == "RGB":
        target[...] = values if keep_color else to_grayscale(values)
    elif photometric in _YBR_FULL and not keep_color:
        target[...] = values[..., 0]
    else:
        message = (
            f"decoded pixels are still {photometric}, which usdcm cannot convert to RGB "
            "with this transfer syntax"
        )
        raise DecodeError(message)


def _unsigned(
    frame: NDArray[Any], module: _PixelModule, index: int
) -> NDArray[np.unsignedinteger[Any]]:
    """Return ``frame`` in the output dtype: signed values offset by ``2 ** (BitsStored - 1)``.

    Raises ``DecodeError`` when a value does not fit in Bits Stored (a codestream whose
    precision exceeds the header's), rather than letting the cast wrap it around.
    """
    values: NDArray[Any] = frame
    if frame.dtype.kind == "i":
        values = frame.astype(np.int32) + np.int32(1 << (module.bits_stored - 1))
    if frame.dtype.kind == "i" or 8 * frame.dtype.itemsize > module.bits_stored:
        low, high = int(values.min(initial=0)), int(values.max(initial=0))
        if low < 0 or high > module.max_value:
            message = (
                f"frame {index + 1} holds values outside the 0..{module.max_value} range that "
                f"Bits Stored {module.bits_stored} allows (the codestream is deeper than the "
                "header says)"
            )
            raise DecodeError(message)
    result: NDArray[np.unsignedinteger[Any]] = values.astype(module.out_dtype, copy=False)
    return result


def _palette(dataset: Dataset, module: _PixelModule) -> NDArray[np.unsignedinteger[Any]]:
    """Return the palette as an RGB table indexed by the unsigned stored value.

    16-bit entries become 8-bit by their high byte for 8-bit output; 8-bit entries become
    16-bit by ``x 257``. Entries declared 16-bit whose values all fit in 8 bits (a common
    writer error) are read as 8-bit.
    """
    entries = 1 << module.bits_stored
    indices = np.arange(entries, dtype=np.int32)
    if module.signed:
        indices -= np.int32(entries // 2)
    try:
        rgb = apply_color_lut(indices, _widened_palette(dataset))[..., :3]
        descriptor = [int(value) for value in dataset.RedPaletteColorLookupTableDescriptor]
        lut_bits = descriptor[2]
    except Exception as err:  # pydicom raises ValueError, AttributeError, struct.error...
        message = f"PALETTE COLOR image without a usable palette table ({type(err).__name__})"
        raise DecodeError(message) from err
    if lut_bits not in (8, 16):
        lut_bits = 8 * rgb.dtype.itemsize
    if lut_bits == 16 and int(rgb.max(initial=0)) <= 0xFF:
        lut_bits = 8
    out_bits = 8 * module.out_dtype.itemsize
    table = rgb.astype(np.uint32)
    if lut_bits > out_bits:
        table >>= np.uint32(lut_bits - out_bits)
    elif lut_bits < out_bits:
        table *= np.uint32(257)
    result: NDArray[np.unsignedinteger[Any]] = table.astype(module.out_dtype)
    return result


def _widened_palette(dataset: Dataset) -> Dataset:
    """Work around pydicom 3.0 ``apply_color_lut`` wrapping indices above 255 to 8 bits when
    a table has more than 256 entries of 8 bits: hand it those entries as 16-bit words.

    Returns ``dataset`` itself when no workaround is needed.
    """
    descriptor = dataset.get("RedPaletteColorLookupTableDescriptor")
    if descriptor is None or "RedPaletteColorLookupTableData" not in dataset:
        return dataset
    count = int(descriptor[0]) or 1 << 16
    if count <= 256 or len(dataset.RedPaletteColorLookupTableData) != count:
        return dataset
    widened = Dataset()
    for colour in ("Red", "Green", "Blue"):
        widened[f"{colour}PaletteColorLookupTableDescriptor"] = dataset[
            f"{colour}PaletteColorLookupTableDescriptor"
        ]
        data = np.frombuffer(dataset[f"{colour}PaletteColorLookupTableData"].value, np.uint8)
        setattr(widened, f"{colour}PaletteColorLookupTableData", data.astype("<u2").tobytes())
    return widened


def _transfer_syntax(dataset: Dataset) -> UID:
    """The transfer syntax from the file meta, else from how the data set was encoded."""
    meta = getattr(dataset, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    if value:
        return UID(str(value))
    implicit, little = dataset.original_encoding
    if implicit is None or little is None:
        message = "the data set has no Transfer Syntax UID and was not read from a file"
        raise DecodeError(message)
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _header_int(dataset: Dataset, keyword: str, default: int | None = None) -> int:
    value = dataset.get(keyword)
    if value is None or value == "":
        if default is None:
            message = f"the header has no {keyword}, which decoding needs"
            raise DecodeError(message)
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        message = f"the header's {keyword} is not an integer"
        raise DecodeError(message) from err


def _pixel_module(dataset: Dataset, *, video: bool = False) -> _PixelModule:
    """Read and check the Image Pixel module values that decoding relies on.

    ``video`` also accepts YBR_PARTIAL_420, which only the video syntaxes use.
    """
    if len(dataset) == 0:
        # pydicom 3.0 returns an empty data set, with only a warning, for a file cut
        # inside encapsulated Pixel Data.
        raise DecodeError("the data set is empty: the file may be truncated")
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        raise DecodeError("the header has no PhotometricInterpretation, which decoding needs")
    supported = (*_SUPPORTED_PHOTOMETRIC, *_VIDEO_PHOTOMETRIC) if video else _SUPPORTED_PHOTOMETRIC
    if photometric not in supported:
        message = (
            f"Photometric Interpretation {photometric} is not supported "
            f"(supported: {', '.join(supported)})"
        )
        raise DecodeError(message)
    bits_allocated = _header_int(dataset, "BitsAllocated")
    module = _PixelModule(
        rows=_header_int(dataset, "Rows"),
        columns=_header_int(dataset, "Columns"),
        frames=_header_int(dataset, "NumberOfFrames", 1),
        samples=_header_int(dataset, "SamplesPerPixel", 1),
        bits_allocated=bits_allocated,
        bits_stored=_header_int(dataset, "BitsStored", bits_allocated),
        signed=_header_int(dataset, "PixelRepresentation", 0) == 1,
        photometric=photometric,
    )
    if module.rows < 1 or module.columns < 1 or module.frames < 1:
        message = f"the header declares an empty image ({module.geometry()})"
        raise DecodeError(message)
    expected_samples = 1 if photometric in (*_GRAY, "PALETTE COLOR") else 3
    if module.samples != expected_samples:
        message = (
            f"Samples per Pixel is {module.samples} but {photometric} needs {expected_samples}"
        )
        raise DecodeError(message)
    if module.bits_allocated not in (1, 8, 16) or not 1 <= module.bits_stored <= 16:
        message = (
            f"Bits Allocated {module.bits_allocated} with Bits Stored {module.bits_stored} "
            "is not supported (usdcm decodes up to 16 bits per sample)"
        )
        raise DecodeError(message)
    if module.bits_stored > module.bits_allocated:
        message = f"Bits Stored {module.bits_stored} exceeds Bits Allocated {bits_allocated}"
        raise DecodeError(message)
    return module


def _decoder(syntax: UID) -> Decoder:
    """Return pydicom's decoder for ``syntax`` or say what is missing."""
    label = syntax_label(syntax)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as err:
        message = (
            f"no decoder for {label}: it is not supported by pydicom or usdcm; export the "
            "images uncompressed (Explicit VR Little Endian), JPEG, JPEG-LS, JPEG 2000 or RLE"
        )
        raise DecodeError(message) from err
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        message = f"no decoder for {label} is installed: install one of: {missing}"
        raise DecodeError(message)
    return decoder


def _plugin_order(decoder: Decoder, plugin: str) -> list[str]:
    """The plugins to try in turn; ``""`` lets pydicom try every installed one."""
    available = tuple(decoder.available_plugins)
    if plugin:
        if plugin not in available:
            message = (
                f"decoding plugin {plugin!r} is not available for {syntax_label(decoder.UID)} "
                f"(available: {', '.join(available) or 'none, pixels are not compressed'})"
            )
            raise DecodeError(message)
        return [plugin]
    if PREFERRED_PLUGIN in available and len(available) > 1:
        return [PREFERRED_PLUGIN, ""]
    return [""]


def _check_pixel_data(dataset: Dataset, syntax: UID, module: _PixelModule) -> None:
    """Check that the Pixel Data can hold what the header declares, before decoding."""
    if "PixelData" not in dataset:
        message = (
            "the data set has no Pixel Data (float pixel data, or read with stop_before_pixels)"
        )
        raise DecodeError(message)
    data = dataset.PixelData
    if data is None or len(data) == 0:
        raise DecodeError("the Pixel Data element is empty")
    if syntax in VIDEO_SYNTAXES:
        return  # one bit stream across the fragments: its frames are counted as decoded
    if syntax in JPEG_XL_SYNTAXES or syntax.is_encapsulated:  # pydicom 3.0 lacks JPEG XL
        _check_frames(data, syntax, module)
        return
    if module.bits_allocated == 1:
        expected = -(-module.rows * module.columns * module.frames * module.samples // 8)
        per_frame = 0
    else:
        samples = 2 if module.photometric == "YBR_FULL_422" else module.samples
        per_frame = module.rows * module.columns * samples * module.bits_allocated // 8
        expected = per_frame * module.frames
    if len(data) in (expected, expected + expected % 2):
        return
    found = "fewer" if len(data) < expected else "more"
    message = (
        f"the Pixel Data holds {len(data)} bytes, {found} than the {expected} the header "
        f"declares ({module.geometry()}, {syntax_label(syntax)})"
    )
    if per_frame and len(data) % per_frame == 0:
        message += f"; that is {len(data) // per_frame} whole frame(s)"
    raise DecodeError(message)


def _check_frames(data: bytes, syntax: UID, module: _PixelModule) -> None:
    """Check every frame's codestream header against Rows, Columns and Samples per Pixel,
    and the number of frames against Number of Frames, before anything is decoded.

    A codec allocates what its codestream declares, not what the header declares: one frame
    claiming 65535 x 65535 pixels would make it allocate gigabytes. So every frame is
    checked here, not only the first, and the output array is allocated only afterwards.
    """
    count = 0
    try:
        for frame in generate_frames(data, number_of_frames=module.frames):
            if count >= module.frames:
                break
            _check_frame(frame, count, syntax, module)
            count += 1
    except DecodeError:
        raise
    except Exception as err:  # malformed encapsulation: items, offsets, delimiters
        message = f"the encapsulated Pixel Data is malformed ({type(err).__name__})"
        raise DecodeError(message) from err
    if count < module.frames:
        message = (
            f"the Pixel Data holds {count} frame(s) but the header declares "
            f"{module.frames} ({syntax_label(syntax)})"
        )
        raise DecodeError(message)


def _check_frame(frame: bytes, index: int, syntax: UID, module: _PixelModule) -> None:
    """Compare one frame's codestream header with Rows, Columns and Samples per Pixel."""
    if syntax == RLELossless:
        _check_rle(frame, index, module)
        return
    shape: tuple[int, int, int] | None = None
    if syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes:
        shape = _jpeg_shape(frame)
    elif syntax in JPEG2000TransferSyntaxes:
        shape = _j2k_shape(frame)
    elif syntax in JPEG_XL_SYNTAXES:
        size = jpegxl_shape(frame)  # the component count is checked after decoding
        shape = None if size is None else (*size, module.samples)
    if shape is None:
        return  # unknown layout: the decoder and the shape check after it will judge
    rows, columns, components = shape
    if (rows in (0, module.rows)) and columns == module.columns and components == module.samples:
        return
    message = (
        f"the {syntax_label(syntax)} codestream of frame {index + 1} is {rows} rows x "
        f"{columns} columns x {components} components, but the header declares Rows "
        f"{module.rows}, Columns {module.columns}, Samples per Pixel {module.samples}"
    )
    raise DecodeError(message)


def _check_rle(frame: bytes, index: int, module: _PixelModule) -> None:
    if len(frame) < 64:
        return
    (segments,) = struct.unpack("<I", frame[:4])
    expected = module.samples * max(module.bits_allocated // 8, 1)
    if segments != expected:
        message = (
            f"the RLE frame {index + 1} has {segments} segments, but Samples per Pixel "
            f"{module.samples} and Bits Allocated {module.bits_allocated} need {expected}"
        )
        raise DecodeError(message)


def _jpeg_shape(data: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG or JPEG-LS start-of-frame segment.

    Bytes between segments are skipped up to the next ``0xFF``, as libjpeg does, so that
    garbage before a start-of-frame cannot hide the size the decoder will allocate.
    """
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            position = data.find(b"\xff", position)
            if position < 0:
                return None
            continue
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan before any start of frame
            return None
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        if marker in _SOF_MARKERS:
            if position + 10 > len(data):
                return None
            rows, columns = struct.unpack(">HH", data[position + 5 : position + 9])
            return int(rows), int(columns), data[position + 9]
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        position += 2 + int(length)
    return None


def _j2k_shape(data: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG 2000 SIZ segment (codestream or JP2 file)."""
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0 or start + 42 > len(data):
        return None
    siz = start + 2
    width, height, x_offset, y_offset = struct.unpack(">IIII", data[siz + 6 : siz + 22])
    (components,) = struct.unpack(">H", data[siz + 38 : siz + 40])
    return int(height - y_offset), int(width - x_offset), int(components)
