"""Step 3 of ingest: decode one SOP instance, crop it to its tissue region, write a NIfTI.

Runs in worker processes. Returns a JSON-ready record of the geometry, or an exclusion.
The NIfTI voxel array is ``(width, height, frames)``: voxel ``[i, j, k]`` is column ``i``,
row ``j``, frame ``k`` of the cropped image; pixdim carries the spacing in mm. How the file
is compressed is a :class:`Compression`; the voxels and the header are the same whichever.
"""

from __future__ import annotations

import functools
import gzip
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np
import pydicom

from usdcm.atomic import atomic_write_bytes, sync_file
from usdcm.dicom.deflate import check_inflated_size
from usdcm.dicom.header import sniff_dicom
from usdcm.dicom.pixels import crop_frames, decode_frames, frames_to_volume
from usdcm.dicom.regions import read_regions, select_tissue_region
from usdcm.errors import DecodeError, NotDicomError, UnsupportedDicomError
from usdcm.ingest.scan import excluded
from usdcm.parallel import DEFAULT_FILE_TIMEOUT_S, FileTimeout

DECODE_BATCH_SIZE = 2
"""Files per worker task when decoding: one image may take seconds and much memory."""


class Compression(StrEnum):
    """How ``usdcm ingest`` compresses the NIfTI images it writes (``--compress``).

    - ``fast`` (the default): gzip by ISA-L's igzip at level :data:`FAST_LEVEL` (python-isal),
      several times faster than zlib's fastest level and about as small; ``.nii.gz``.
    - ``best``: gzip by zlib at level 9, the smallest and slowest; ``.nii.gz``.
    - ``none``: no compression, plain ``.nii`` files: the fastest to write and to read,
      and the largest.

    Every ``.nii.gz`` is a standard gzip stream that any gzip reader (nibabel, ``gzip``)
    opens; the same voxels give the same bytes for a given choice.

    >>> Compression("none").suffix, Compression.FAST.suffix
    ('.nii', '.nii.gz')
    """

    NONE = "none"
    FAST = "fast"
    BEST = "best"

    @property
    def suffix(self) -> str:
        """The image file name's suffix: ``.nii`` without compression, else ``.nii.gz``."""
        return ".nii" if self is Compression.NONE else ".nii.gz"


FAST_LEVEL = 2
"""igzip level of ``--compress fast``. On pydicom's ultrasound files it gives the size of
zlib level 1 (39.0% of the raw NIfTI against 38.9%) in a fifth of its time; igzip level 1
is 10% faster still but 1% larger, level 3 slower and larger (measured by CPU time; see
benchmarks/RESULTS.md)."""
BEST_LEVEL = 9
"""zlib level of ``--compress best``."""
VOX_OFFSET = 352
"""Bytes before the voxels in a single-file NIfTI-1: the 348-byte header and 4 bytes that
say there is no extension."""
_MAX_DIM = 32767
"""The largest size of a NIfTI-1 dimension (``dim`` is int16)."""


def _nibabel_bytes(
    volume: np.ndarray[Any, Any],
    spacing_mm: tuple[float, float] | None,
    frame_time_ms: float | None,
) -> bytes:
    """The uncompressed single-file NIfTI-1 of ``volume``, as nibabel writes it."""
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
    data: bytes = image.to_bytes()
    return data


@functools.lru_cache(maxsize=64)
def _header_template(ndim: int, dtype: str, calibrated: bool) -> bytes:
    """The header nibabel writes for a one-voxel volume of this kind, made once per kind:
    with a spacing of 1 mm (``calibrated``) or none, and no frame time."""
    one_voxel = np.zeros((1,) * ndim, dtype=dtype)
    return _nibabel_bytes(one_voxel, (1.0, 1.0) if calibrated else None, None)[:VOX_OFFSET]


def nifti_header(
    volume: np.ndarray[Any, Any],
    spacing_mm: tuple[float, float] | None,
    frame_time_ms: float | None,
) -> bytes:
    """The :data:`VOX_OFFSET` bytes before the voxels of ``volume``'s NIfTI-1 file.

    Byte for byte what nibabel writes (``Nifti1Image(...).to_bytes()``), without building
    an image per file: nibabel makes the header of each kind of volume once, and the fields
    that differ between volumes of a kind are set here: the shape (``dim``), the spacing
    (``pixdim`` and the diagonal of the affine in ``srow_x``/``srow_y``) and ``descrip``.
    """
    spacing_ok = spacing_mm is None or all(0.0 < value < 1e6 for value in spacing_mm)
    if volume.ndim > 7 or max(volume.shape, default=0) > _MAX_DIM or not spacing_ok:
        return _nibabel_bytes(volume, spacing_mm, frame_time_ms)[:VOX_OFFSET]  # as nibabel
    template = _header_template(volume.ndim, volume.dtype.str, spacing_mm is not None)
    block = bytearray(template)
    header = np.ndarray((), nib.nifti1.header_dtype, block)
    header["dim"] = (volume.ndim, *volume.shape, *([1] * (7 - volume.ndim)))
    if spacing_mm is not None:
        spacing_x, spacing_y = spacing_mm
        header["pixdim"][1:3] = (spacing_x, spacing_y)
        header["srow_x"][0] = spacing_x
        header["srow_y"][1] = spacing_y
    if frame_time_ms is not None:
        header["descrip"] = f"usdcm frame_time_ms={frame_time_ms:.3f}".encode("ascii")
    return bytes(block)


def nifti_bytes(
    volume: np.ndarray[Any, Any],
    spacing_mm: tuple[float, float] | None,
    frame_time_ms: float | None,
    compress: Compression = Compression.FAST,
) -> bytes:
    """Serialise a ``(width, height, frames[, 3])`` volume as NIfTI-1 bytes, gzipped
    unless ``compress`` is ``none``.

    Without a spacing the pixdim stays 1 with unknown units: the manifest then leaves the
    spacing empty, and nothing pretends to know it. The gzip stream has no timestamp, so
    the same input always gives the same bytes.

    >>> volume = np.arange(24, dtype=np.uint8).reshape(4, 3, 2)
    >>> plain = nifti_bytes(volume, (0.2, 0.2), 33.3, Compression.NONE)
    >>> gzip.decompress(nifti_bytes(volume, (0.2, 0.2), 33.3)) == plain
    True
    >>> np.array_equal(nib.Nifti1Image.from_bytes(plain).get_fdata(), volume)
    True
    """
    return _compressed(
        _nifti_file(nifti_header(volume, spacing_mm, frame_time_ms), volume), compress
    )


def _nifti_file(header: bytes, volume: np.ndarray[Any, Any]) -> bytearray:
    """``header`` then the voxels in the file's (Fortran) order, copied once."""
    data = bytearray(len(header) + volume.nbytes)
    data[: len(header)] = header
    voxels = np.ndarray(volume.shape, volume.dtype, data, len(header), order="F")
    voxels[...] = volume
    return data


def _compressed(data: bytearray, compress: Compression) -> bytes:
    compress = Compression(compress)
    if compress is Compression.NONE:
        return bytes(data)
    if compress is Compression.BEST:
        return gzip.compress(data, compresslevel=BEST_LEVEL, mtime=0)
    from isal import igzip  # lazy: only ingest compresses

    return igzip.compress(data, FAST_LEVEL, mtime=0)


class PendingImage(NamedTuple):
    """A decoded image whose NIfTI file is still to be compressed and written: what an
    in-process conversion (``ConvertTask.write=False``) hands to :func:`on_disk`."""

    path: str
    header: bytes
    volume: np.ndarray[Any, Any]
    compress: Compression

    def write(self) -> None:
        """Compress, write atomically and sync; raises ``OSError`` naming the path."""
        data = _compressed(_nifti_file(self.header, self.volume), self.compress)
        atomic_write_bytes(Path(self.path), data)


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
    source: Path,
    image_path: Path,
    *,
    keep_color: bool,
    frame_time_ms: float | None,
    compress: Compression = Compression.FAST,
    fsync: bool = True,
) -> dict[str, Any]:
    """Decode ``source``, crop to the largest 2D tissue region, and write ``image_path``
    (compressed as ``compress`` says; the caller names it with :attr:`Compression.suffix`).

    A source that cannot be decoded gives an exclusion record. An image that cannot be
    written (a full disk) is not the source's fault: it gives a ``write_failed`` record,
    which stops the run and is never journaled, so the next run converts the file again.
    With ``fsync=False`` the image is on disk only once the caller has synced it (see
    :func:`on_disk`).
    """
    try:
        decoded = decode_volume(source, keep_color=keep_color)
        data = nifti_bytes(decoded.volume, decoded.spacing_mm, frame_time_ms, compress)
    except Exception as err:  # a damaged file may break pydicom or a codec in any way
        return exclusion_for(err)
    try:
        atomic_write_bytes(image_path, data, fsync=fsync)
    except OSError as err:
        return write_failed(err, image_path)
    return _converted(decoded)


def _converted(decoded: DecodedVolume) -> dict[str, Any]:
    """The record of a converted image: its geometry, spacing, crop and region note."""
    spacing = decoded.spacing_mm
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


def write_failed(err: OSError, image_path: str | Path) -> dict[str, Any]:
    """The record of an image that could not be written or synced: it stops the run."""
    return {
        "status": "write_failed",
        "errno": err.errno,
        "error": err.strerror or type(err).__name__,
        "path": str(err.filename or image_path),
    }


class ConvertTask(NamedTuple):
    """One file for a worker: where to read, where to write, and how.

    Paths are plain strings: a run holds one task per file to convert, and a ``Path`` costs
    several times the memory of its string.

    Who makes the image durable: by default (a Dask worker) the worker writes and syncs
    it. With ``fsync=False`` (a worker process of this machine) the worker writes it and
    :func:`on_disk` syncs it in the process that reads the results. With ``write=False``
    (conversion in that process itself) the worker only decodes and :func:`on_disk`
    compresses, writes and syncs it in a thread while the next file decodes.
    """

    source: str
    image_path: str
    keep_color: bool
    frame_time_ms: float | None
    compress: Compression = Compression.FAST
    fsync: bool = True
    write: bool = True


DECODED = "decoded"
"""Status of a record whose image is a :class:`PendingImage` under the key ``image``;
:func:`on_disk` turns it into ``converted`` once the image is written."""


def run_convert_task(task: ConvertTask) -> dict[str, Any]:
    """Worker entry point for :func:`convert_file`; a file past the time limit is excluded
    with code ``timeout``. With ``task.write`` false, decodes only: see :class:`ConvertTask`.
    """
    try:
        if task.write:
            return convert_file(
                Path(task.source),
                Path(task.image_path),
                keep_color=task.keep_color,
                frame_time_ms=task.frame_time_ms,
                compress=task.compress,
                fsync=task.fsync,
            )
        try:
            decoded = decode_volume(Path(task.source), keep_color=task.keep_color)
            header = nifti_header(decoded.volume, decoded.spacing_mm, task.frame_time_ms)
        except Exception as err:  # a damaged file may break pydicom or a codec in any way
            return exclusion_for(err)
        image = PendingImage(task.image_path, header, decoded.volume, task.compress)
        return {**_converted(decoded), "status": DECODED, "image": image}
    except FileTimeout as timeout:
        return timeout_exclusion(timeout)


SYNC_THREADS = 4
"""Threads of :func:`on_disk`: the disk may commit their syncs together."""
MAX_PENDING_BYTES = 256 * 1024**2
"""Voxel bytes :func:`on_disk` may hold while their images are written; past it, it waits."""


def _write_pending(image: PendingImage) -> None:
    image.write()


def on_disk(
    results: Iterable[tuple[ConvertTask, dict[str, Any]]],
) -> Iterator[tuple[ConvertTask, dict[str, Any]]]:
    """Yield each ``(task, record)`` of ``results`` once its image is on disk.

    Images not yet durable are finished in background threads while the next files are
    decoded: a ``decoded`` record's image (``write=False``) is compressed, written and
    synced; a ``converted`` one written with ``fsync=False`` is synced. Its record is held
    back until then, so that nothing is journaled or counted as converted before its
    image is durable; at most :data:`MAX_PENDING_BYTES` of voxels wait (at least one
    image). A write or sync that fails (a full disk) gives a ``write_failed`` record,
    which stops the run. Other records pass straight through.
    """
    pending: deque[tuple[ConvertTask, dict[str, Any], Future[None], int]] = deque()
    held = 0

    def finished(
        task: ConvertTask, record: dict[str, Any], done: Future[None], size: int
    ) -> tuple[ConvertTask, dict[str, Any]]:
        nonlocal held
        held -= size
        # exception(), not result(): a raise here would tie this frame to the future that
        # holds the error, and keep the worker pool alive after the run stops
        error = done.exception()
        if error is None:
            return task, record
        if isinstance(error, OSError):
            return task, write_failed(error, task.image_path)
        if isinstance(error, Exception):  # compressing may run out of memory
            return task, exclusion_for(error)
        raise error

    with ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="usdcm-write") as pool:
        for task, record in results:
            status = record.get("status")
            if status == DECODED:
                image: PendingImage = record.pop("image")
                record["status"] = "converted"
                size = image.volume.nbytes
                pending.append((task, record, pool.submit(_write_pending, image), size))
                held += size
                del image
            elif status == "converted" and not task.fsync:
                pending.append((task, record, pool.submit(sync_file, Path(task.image_path)), 0))
            else:
                yield task, record
            while pending and (pending[0][2].done() or held > MAX_PENDING_BYTES):
                yield finished(*pending.popleft())
        while pending:
            yield finished(*pending.popleft())
