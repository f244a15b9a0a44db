"""Memory stays flat as an export grows: ingest keeps no per-file state in memory.

A regression test, not a benchmark (``benchmarks/scale.py`` measures RSS up to 200,000
instances): Python's allocations in the ingesting process (``tracemalloc``, its peak over
the whole run) for an export of N and of 2N instances, headers only (the conversion
returns the record it gives for these files without decoding them, and writes nothing).
The store's chunk is made small, so that both sizes span many chunks. Before the run's
state moved to disk (``usdcm.ingest.runstate``), the peak grew by 0.6-0.9 KiB per
instance here; now it does not grow.
"""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

import usdcm.ingest.pipeline as pipeline
import usdcm.ingest.runstate as runstate
from usdcm.dicom.sop import US_IMAGE_STORAGE
from usdcm.ingest import IngestOptions, ingest

N = 300
PER_SERIES = 10
BYTES_PER_INSTANCE = 100
"""The most the peak may grow per instance: a sixth of the 0.6-0.9 KiB it grew before,
and far above what it grows now (0, within about 15 bytes of noise either way)."""
UID = "1.2.826.0.1.3680043.8.498."
PLACEHOLDER = UID.ljust(64, "9")


def template() -> bytes:
    """A 4x4 US image whose SOP Instance and Series UIDs are :data:`PLACEHOLDER`-like."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = PLACEHOLDER
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = US_IMAGE_STORAGE
    ds.SOPInstanceUID = PLACEHOLDER
    ds.StudyInstanceUID = f"{UID}2"
    ds.SeriesInstanceUID = PLACEHOLDER[:-1] + "8"
    ds.PatientID = "MEMTEST"  # one patient: identifier words do not grow with the export
    ds.Modality = "US"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(16, dtype=np.uint8).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_export(root: Path, instances: int) -> Path:
    data = template()
    series_placeholder = (PLACEHOLDER[:-1] + "8").encode()
    for index in range(instances):
        series = index // PER_SERIES
        sop = f"{UID}4{index:020d}".ljust(64, "0").encode()
        series_uid = f"{UID}3{series:020d}".ljust(64, "0").encode()
        folder = root / f"SE{series:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        patched = data.replace(PLACEHOLDER.encode(), sop).replace(series_placeholder, series_uid)
        (folder / f"IM{index:06d}").write_bytes(patched)
    return root


CONVERTED = {
    "status": "converted",
    "frames": 1,
    "height": 4,
    "width": 4,
    "channels": 1,
    "spacing_x_mm": None,
    "spacing_y_mm": None,
    "crop": "",
    "region_note": "",
}


def headers_only(_task: object) -> dict[str, Any]:
    return dict(CONVERTED)


def as_written(results: Iterable[Any]) -> Iterable[Any]:
    return results


def fill_free_lists() -> None:
    """Fill CPython's free lists of small tuples (2,000 of each size, kept for reuse).

    Otherwise they fill during the measured runs, by more in the larger one: tuples freed
    into them stay traced, and that looks like growth per instance up to ~2,000 of them.
    """
    tuples = [tuple(range(size)) for size in range(1, 21) for _ in range(2100)]
    del tuples


def peak_bytes(source: Path, out: Path) -> int:
    fill_free_lists()
    tracemalloc.start()
    try:
        result = ingest(source, out, IngestOptions(workers=1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.n_images == result.n_files  # every instance went all the way through
    return peak


def test_peak_memory_does_not_grow_with_the_instances(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runstate, "CHUNK", 16)
    monkeypatch.setattr(pipeline, "run_convert_task", headers_only)
    monkeypatch.setattr(pipeline, "on_disk", as_written)
    small, large = write_export(tmp_path / "n", N), write_export(tmp_path / "2n", 2 * N)
    ingest(small, tmp_path / "warm-up", IngestOptions(workers=1))  # imports, caches
    peaks = [peak_bytes(small, tmp_path / "out-n"), peak_bytes(large, tmp_path / "out-2n")]
    per_instance = (peaks[1] - peaks[0]) / N
    assert per_instance < BYTES_PER_INSTANCE, (
        f"peak memory grew {per_instance:.0f} bytes per instance ({peaks[0]:,} bytes at "
        f"{N} instances, {peaks[1]:,} at {2 * N})"
    )
