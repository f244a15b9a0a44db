"""Scale: ingest synthetic exports of up to 20,000 small US instances; time and peak memory.

The export is written by a minimal generator here, not by ``usdcm synth`` (which renders
full screens and would take minutes): one template US Image Storage dataset (32x32
MONOCHROME2, Explicit VR Little Endian) is serialised once with fixed-length placeholder
UIDs, and each file is that template with new Patient ID / Study / Series / SOP Instance
UIDs patched into the bytes (10 instances per series, one series per patient, in the usual
``PT/ST/SE/IM`` folders). Ingest (``--workers`` = cores, no labels) runs in a fresh child
process per size, which reports its peak RSS (``VmHWM``) and the largest worker's
``ru_maxrss``. The baseline is the smallest size: memory should stay flat as the export
grows, i.e. peak RSS should not grow in proportion to the number of instances.

Run: ``python benchmarks/scale.py [--instances 20000]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _machine import describe, maxrss_mib, peak_rss_mib

PER_SERIES = 10
UID_ROOT = "1.2.826.0.1.3680043.8.498."
PLACEHOLDERS = {name: f"{UID_ROOT}9{n}".ljust(64, "9") for n, name in enumerate("PSTI")}
"""Patient, Study, Series, Instance: 64-character values, unique in the template."""


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


def child(kind: str, source: Path, out: Path) -> None:
    from usdcm.ingest import IngestOptions, ingest

    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if kind == "ingest":
        result = ingest(source, out, IngestOptions(workers=os.cpu_count() or 1))
        extra = {"images": result.n_images, "excluded": result.n_excluded}
    print(
        json.dumps(
            {
                "self_mib": peak_rss_mib(),
                "children_mib": maxrss_mib(resource.RUSAGE_CHILDREN),
                "seconds": time.perf_counter() - started,
                **extra,
            }
        )
    )


def measure(kind: str, source: Path, out: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, str(source), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20000, help="largest export")
    args = parser.parse_args()
    sizes = sorted({max(args.instances // d, PER_SERIES) for d in (8, 4, 2, 1)})
    print(f"machine: {describe()}")
    print(f"sizes: {sizes} instances of 32x32 (ingest --workers {os.cpu_count()})\n")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        floor = measure("floor", root, root / "unused")
        print(
            "| instances | generate s | ingest s | files/s | images | peak RSS MiB | "
            "largest worker MiB | MiB above floor per 1,000 instances | peak vs smallest |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        smallest: float | None = None
        for size in sizes:
            source = root / f"export-{size}"
            generate_s = write_scale_export(source, size)
            result = measure("ingest", source, root / f"data-{size}")
            peak = result["self_mib"]
            smallest = smallest or peak
            above = (peak - floor["self_mib"]) / size * 1000
            print(
                f"| {size} | {generate_s:.1f} | {result['seconds']:.1f} | "
                f"{size / result['seconds']:.0f} | {result['images']} | {peak:.0f} | "
                f"{result['children_mib']:.0f} | {above:.2f} | {peak / smallest:.2f}x |"
            )
            subprocess.run(["rm", "-rf", str(source), str(root / f"data-{size}")], check=True)
        print(f"\nfloor (python + usdcm.ingest imports): {floor['self_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
