"""Scale: ingest synthetic exports of up to 20,000 (full) and 200,000 (headers only)
small US instances; time and peak memory.

The export is written by a minimal generator here, not by ``usdcm synth`` (which renders
full screens and would take minutes): one template US Image Storage dataset (32x32
MONOCHROME2, Explicit VR Little Endian) is serialised once with fixed-length placeholder
UIDs, and each file is that template with new Patient ID / Study / Series / SOP Instance
UIDs patched into the bytes (10 instances per series, one series per patient, in the usual
``PT/ST/SE/IM`` folders).

Two modes, each size ingested (``--workers`` = cores, no labels) in a fresh child
process that reports its peak RSS (``VmHWM``), the largest worker's ``ru_maxrss`` and its
own CPU seconds (the main process's share of the work, less noisy than wall time on a
busy machine):

- **full**: :func:`usdcm.ingest.ingest` as ``usdcm ingest`` runs it, decoding each file
  and writing its ``.nii.gz``.
- **headers only**: the same :func:`~usdcm.ingest.ingest` call (walk, header scan in the
  workers, journal, ``select_instances()``, the per-file state of the run, manifest,
  excluded list, ``ingest.json``, journal compaction), with one change: the worker's
  conversion of a file returns the record that the real conversion gives for the template
  (32x32, 1 frame, no region) without reading the pixels or writing an image (so there is
  no image to sync either: ``on_disk`` passes the records through). So the main
  process holds and streams exactly what a full ingest of the same export holds; only the
  workers' decode and gzip work, and the image files, are left out.

Memory should stay flat as the export grows: each table prints the slope of the peak RSS
against the smallest size of its mode, in MiB per 1,000 instances, and the ratio of the
peaks.

Run: ``python benchmarks/scale.py [--instances 20000] [--headers-only 200000]``
(``make bench``; ``0`` skips a mode).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from _machine import describe, maxrss_mib, peak_rss_mib

PER_SERIES = 10
UID_ROOT = "1.2.826.0.1.3680043.8.498."
PLACEHOLDERS = {name: f"{UID_ROOT}9{n}".ljust(64, "9") for n, name in enumerate("PSTI")}
"""Patient, Study, Series, Instance: 64-character values, unique in the template."""
FULL = "full"
HEADERS_ONLY = "headers-only"


def template_bytes() -> bytes:
    """A Part 10 US image with placeholder identifiers, serialised once."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = PLACEHOLDERS["I"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = PLACEHOLDERS["I"]
    ds.StudyInstanceUID = PLACEHOLDERS["S"]
    ds.SeriesInstanceUID = PLACEHOLDERS["T"]
    ds.PatientID = PLACEHOLDERS["P"]
    ds.PatientName = "SCALE^TEST"
    ds.AccessionNumber = "A1"
    ds.StudyDate = "20240101"
    ds.Modality = "US"
    ds.Manufacturer = "usdcm benchmark"
    ds.ManufacturerModelName = "scale"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_scale_export(out: Path, instances: int) -> float:
    """Write ``instances`` files under ``out``; returns the seconds it took."""
    started = time.perf_counter()
    template = template_bytes()
    encoded = {key: value.encode("ascii") for key, value in PLACEHOLDERS.items()}
    for index in range(instances):
        series = index // PER_SERIES
        values = {
            "P": f"{UID_ROOT}1{series:020d}",
            "S": f"{UID_ROOT}2{series:020d}",
            "T": f"{UID_ROOT}3{series:020d}",
            "I": f"{UID_ROOT}4{index:020d}",
        }
        data = template
        for key, value in values.items():
            data = data.replace(encoded[key], value.ljust(64, "0").encode("ascii"))
        folder = out / f"PT{series:06d}" / "ST000000" / "SE000000"
        if index % PER_SERIES == 0:
            folder.mkdir(parents=True)
        (folder / f"IM{index % PER_SERIES:06d}").write_bytes(data)
    return time.perf_counter() - started


def _fixed_record(record: dict[str, Any], _task: object) -> dict[str, Any]:
    """The headers-only conversion: the real conversion's record, without the work."""
    return dict(record)


def converted_record(root: Path) -> dict[str, Any]:
    """What the real conversion records for the template (converted here, in the driver,
    so that the measured child never decodes); every file of an export gives the same."""
    from usdcm.ingest.convert import ConvertTask, run_convert_task

    write_scale_export(root / "template", 1)
    first = next(path for path in (root / "template").rglob("IM*"))
    task = ConvertTask(str(first), str(root / "template.nii.gz"), False, None)
    record = run_convert_task(task)
    assert record["status"] == "converted", record
    return record


def _as_written(results: Iterable[Any]) -> Iterable[Any]:
    """The headers-only stand-in for ``on_disk``: there is no image to sync."""
    return results


def headers_only(record: dict[str, Any]) -> None:
    """Make this process's ingest convert nothing: each file gets ``record``, the real
    conversion's record for the template, and no image is written or synced (see the
    module docstring)."""
    import usdcm.ingest.pipeline as pipeline

    pipeline.run_convert_task = functools.partial(_fixed_record, record)  # type: ignore[assignment]
    pipeline.on_disk = _as_written  # type: ignore[assignment]


def child(kind: str, source: Path, out: Path, record: str) -> None:
    from usdcm.ingest import IngestOptions, ingest

    extra: dict[str, Any] = {}
    if kind == HEADERS_ONLY:
        headers_only(json.loads(record))
    started = time.perf_counter()
    if kind in (FULL, HEADERS_ONLY):
        result = ingest(source, out, IngestOptions(workers=os.cpu_count() or 1))
        timings = json.loads((out / "ingest.json").read_text())["timings_s"]
        extra = {"images": result.n_images, "excluded": result.n_excluded, "timings": timings}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "self_cpu_s": usage.ru_utime + usage.ru_stime,
                "self_mib": peak_rss_mib(),
                "children_mib": maxrss_mib(resource.RUSAGE_CHILDREN),
                "seconds": time.perf_counter() - started,
                **extra,
            }
        )
    )


def measure(kind: str, source: Path, out: Path, record: str = "{}") -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, str(source), str(out), record]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_mode(kind: str, sizes: list[int], root: Path, record: str = "{}") -> None:
    """Generate, ingest and remove an export of each size; print one table row each."""
    print(f"\n### {kind}: {sizes} instances of 32x32, ingest --workers {os.cpu_count()}\n")
    print(
        "| instances | generate s | ingest s | files/s | scan s | convert s | main CPU s | "
        "images | peak RSS MiB | largest worker MiB | MiB per 1,000 instances vs smallest | "
        "peak vs smallest |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    smallest: tuple[int, float] | None = None
    for size in sizes:
        source, out = root / f"export-{size}", root / f"data-{size}"
        try:
            generate_s = write_scale_export(source, size)
            result = measure(kind, source, out, record)
        finally:
            subprocess.run(["rm", "-rf", str(source), str(out)], check=True)
        peak = result["self_mib"]
        smallest = smallest or (size, peak)
        slope = (
            f"{(peak - smallest[1]) / (size - smallest[0]) * 1000:.3f}"
            if size > smallest[0]
            else "-"
        )
        timings = result["timings"]
        print(
            f"| {size} | {generate_s:.1f} | {result['seconds']:.1f} | "
            f"{size / result['seconds']:.0f} | {timings.get('scan_s', 0):.1f} | "
            f"{timings.get('convert_s', 0):.1f} | {result['self_cpu_s']:.1f} | "
            f"{result['images']} | {peak:.0f} | "
            f"{result['children_mib']:.0f} | {slope} | {peak / smallest[1]:.2f}x |",
            flush=True,
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--instances", type=int, default=20000, help="largest full export (0: skip)"
    )
    parser.add_argument(
        "--headers-only",
        type=int,
        default=200000,
        help="largest headers-only export (0: skip); also ingested at a tenth of it",
    )
    args = parser.parse_args()
    print(f"machine: {describe()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        floor = measure("floor", root, root / "unused")
        if args.instances:
            sizes = sorted({max(args.instances // d, PER_SERIES) for d in (8, 4, 2, 1)})
            run_mode(FULL, sizes, root)
        if args.headers_only:
            sizes = sorted({max(args.headers_only // d, PER_SERIES) for d in (10, 1)})
            record = json.dumps(converted_record(root))
            run_mode(HEADERS_ONLY, sizes, root, record)
        print(f"\nfloor (python + usdcm.ingest imports): {floor['self_mib']:.0f} MiB")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
