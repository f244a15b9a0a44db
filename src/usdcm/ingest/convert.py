"""Step 3 of ingest: decode one SOP instance, crop it to its tissue region, write a NIfTI.

Runs in worker processes. Returns a JSON-ready record of the geometry, or an exclusion.
The NIfTI voxel array is ``(width, height, frames)``: voxel ``[i, j, k]`` is column ``i``,
row ``j``, frame ``k`` of the cropped image; pixdim carries the spacing in mm.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np
import pydicom

from usdcm.atomic import atomic_write_bytes
from usdcm.dicom.deflate import check_inflated_size
from usdcm.dicom.header import sniff_dicom
from usdcm.dicom.pixels import crop_frames, decode_frames, frames_to_volume
from usdcm.dicom.regions import read_regions, select_tissue_region
from usdcm.errors import DecodeError, NotDicomError, UnsupportedDicomError
from usdcm.ingest.scan import excluded
from usdcm.parallel import DEFAULT_FILE_TIMEOUT_S, FileTimeout

NIFTI_COMPRESSLEVEL = 1
DECODE_BATCH_SIZE = 2
"""Files per worker task when decoding: one image may take seconds and much memory."""


def nifti_bytes(
    volume: np.ndarray[Any, Any],
    spacing_mm: tuple[float, float] | None,
    frame_time_ms: float | None,
) -> bytes:
    """Serialise a ``(width, height, frames[, 3])`` volume as gzipped NIfTI-1 bytes.

    Without a spacing the pixdim stays 1 with unknown units: the manifest then leaves the
    spacing empty, and nothing pretends to know it. The gzip stream has no timestamp, so
    the same input always gives the same bytes.
    """
    spacing_x, spacing_y = spacing_mm or (1.0, 1.0)
    affine = np.diag([spacing_x, spacing_y, 1.0, 1.0])
    image = nib.Nifti1Image(volume, affine)
    header = image.header
    header.set_zooms((spacing_x, spacing_y, 1.0, *([1.0] * (volume.ndim - 3))))
    header.set_xyzt_units(xyz="mm" if spacing_mm else "unknown", t="unknown")
    description = "usdcm"
    if frame_time_ms is not None:
        description += f" frame_time_ms={frame_time_ms:.3f}"
    header["descrip"] = description.encode("ascii")
    header.set_qform(affine, code=0 if spacing_mm is None else 2)
    header.set_sform(affine, code=0 if spacing_mm is None else 2)
    return gzip.compress(image.to_bytes(), compresslevel=NIFTI_COMPRESSLEVEL, mtime=0)


class DecodedVolume(NamedTuple):
    """One SOP instance decoded, cropped and laid out as the NIfTI voxel array."""

    volume: np.ndarray[Any, Any]  # (width, height, frames[, 3])
    frames: int
    height: int
    width: int
    channels: int
    spacing_mm: tuple[float, float] | None
    crop: str
    region_note: str
    """What was tolerated in the region (``clipped_1px;negative_delta_x``...), or empty."""


def decode_volume(source: Path, *, keep_color: bool) -> DecodedVolume:
    """Decode ``source`` in memory and crop it to its largest 2D tissue region.

    The one decoding path of ``usdcm ingest`` (which then writes the volume) and
    ``usdcm predict`` (which classifies it without writing anything).

    Raises
    ------
    DecodeError, UnsupportedDicomError, NotDicomError, OSError, MemoryError
        And whatever a damaged file makes pydicom or a codec raise; see
        :func:`exclusion_for`.
    """
    part10 = sniff_dicom(source)
    if part10:
        check_inflated_size(source)
    # pydicom converts values lazily, and its warnings may quote them (names included):
    # silence them for the whole read, not only for dcmread.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(source, force=not part10)
        frames = decode_frames(dataset, keep_color=keep_color)
        rows, columns = int(frames.shape[1]), int(frames.shape[2])
        region = select_tissue_region(read_regions(dataset), rows=rows, columns=columns)
    cropped = crop_frames(frames, region)
    return DecodedVolume(
        volume=frames_to_volume(cropped),
        frames=int(cropped.shape[0]),
        height=int(cropped.shape[1]),
        width=int(cropped.shape[2]),
        channels=int(cropped.shape[3]) if cropped.ndim == 4 else 1,
        spacing_mm=region.spacing_mm if region is not None else None,
        crop="" if region is None else region.as_crop(),
        region_note="" if region is None else region.region_note,
    )


def exclusion_for(err: BaseException) -> dict[str, Any]:
    """The exclusion record for an error raised while decoding or writing one file."""
    if isinstance(err, DecodeError | UnsupportedDicomError | NotDicomError):
        return excluded("decode_error", str(err))
    if isinstance(err, MemoryError):
        return excluded("decode_error", "out of memory while decoding")
    if isinstance(err, RecursionError):
        return excluded("unreadable", "sequences nested too deeply to read the data set")
    if isinstance(err, OSError):
        return excluded("unreadable", f"cannot read or write ({type(err).__name__})")
    return excluded("decode_error", f"pixel data could not be decoded ({type(err).__name__})")


def timeout_exclusion(timeout: FileTimeout) -> dict[str, Any]:
    """The exclusion of a file whose decoding ran past its time limit (caught in Python)."""
    return excluded("timeout", f"{timeout}; the file is left out")


def decode_crashed(_task: object) -> dict[str, Any]:
    """The exclusion of a file whose decoder killed its worker process."""
    return excluded("decode_error", "decoder crashed the worker")


def decode_timed_out(_task: object) -> dict[str, Any]:
    """The exclusion of a file whose decoder was stuck in C code past the time limit."""
    return excluded("timeout", f"decoding took over {DEFAULT_FILE_TIMEOUT_S:g} s")


def convert_file(
    source: Path, image_path: Path, *, keep_color: bool, frame_time_ms: float | None
) -> dict[str, Any]:
    """Decode ``source``, crop to the largest 2D tissue region, and write ``image_path``.

    A source that cannot be decoded gives an exclusion record. An image that cannot be
    written (a full disk) is not the source's fault: it gives a ``write_failed`` record,
    which stops the run and is never journaled, so the next run converts the file again.
    """
    try:
        decoded = decode_volume(source, keep_color=keep_color)
        spacing = decoded.spacing_mm
        data = nifti_bytes(decoded.volume, spacing, frame_time_ms)
    except Exception as err:  # a damaged file may break pydicom or a codec in any way
        return exclusion_for(err)
    try:
        atomic_write_bytes(image_path, data)
    except OSError as err:
        return {
            "status": "write_failed",
            "errno": err.errno,
            "error": err.strerror or type(err).__name__,
            "path": str(err.filename or image_path),
        }
    return {
        "status": "converted",
        "frames": decoded.frames,
        "height": decoded.height,
        "width": decoded.width,
        "channels": decoded.channels,
        "spacing_x_mm": None if spacing is None else round(spacing[0], 6),
        "spacing_y_mm": None if spacing is None else round(spacing[1], 6),
        "crop": decoded.crop,
        "region_note": decoded.region_note,
    }


class ConvertTask(NamedTuple):
    """One file for a worker: where to read, where to write, and how.

    Paths are plain strings: a run holds one task per file to convert, and a ``Path`` costs
    several times the memory of its string.
    """

    source: str
    image_path: str
    keep_color: bool
    frame_time_ms: float | None


def run_convert_task(task: ConvertTask) -> dict[str, Any]:
    """Worker entry point for :func:`convert_file`; a file past the time limit is excluded
    with code ``timeout``."""
    try:
        return convert_file(
            Path(task.source),
            Path(task.image_path),
            keep_color=task.keep_color,
            frame_time_ms=task.frame_time_ms,
        )
    except FileTimeout as timeout:
        return timeout_exclusion(timeout)
