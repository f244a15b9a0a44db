"""Ingest throughput: ``usdcm ingest`` with 1..N workers against the naive loop.

The baseline, measured in the same run on the same synthetic export, is the loop most
scripts start from: ``dcmread`` -> ``pixel_array`` -> ``nibabel.save``, one file at a time,
skipping what fails. A second reference is the pure decode time (``dcmread`` plus usdcm's
own ``decode_frames``) of the files ingest keeps: ingest's overhead is measured against it.

Run: ``python benchmarks/ingest.py [--patients 40] [--frames 8]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from usdcm.dicom.pixels import decode_frames
from usdcm.ingest import IngestOptions, ingest
from usdcm.synth import write_export


def naive_loop(files: list[Path], out: Path) -> tuple[float, int, int]:
    """dcmread + pixel_array + nibabel.save per file; returns (seconds, converted, failed)."""
    out.mkdir()
    converted = failed = 0
    started = time.perf_counter()
    for index, path in enumerate(files):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = pydicom.dcmread(path)
                array = dataset.pixel_array
            nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), out / f"{index}.nii.gz")
            converted += 1
        except Exception:
            failed += 1
    return time.perf_counter() - started, converted, failed


def decode_only(files: list[Path]) -> float:
    started = time.perf_counter()
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decode_frames(pydicom.dcmread(path, force=True))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=8, help="typical cine length")
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export = write_export(
            root / "pacs", patients=args.patients, seed=args.seed, frames=args.frames
        )
        files = sorted(p for p in export.root.rglob("*") if p.is_file())
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        print(f"export: {len(files)} files, {megabytes:.1f} MB, {len(export.image_paths)} images\n")

        naive_s, naive_ok, naive_failed = naive_loop(files, root / "naive")
        decode_s = decode_only(list(export.image_paths))
        rows = [("naive loop (baseline)", naive_s, naive_ok, naive_failed)]
        timings: dict[int, float] = {}
        for workers in sorted({1, *range(2, args.max_workers + 1)}):
            out = root / f"usdcm-{workers}"
            started = time.perf_counter()
            result = ingest(export.root, out, IngestOptions(workers=workers))
            timings[workers] = time.perf_counter() - started
            rows.append(
                (
                    f"usdcm ingest --workers {workers}",
                    timings[workers],
                    result.n_images,
                    result.n_excluded,
                )
            )
            shutil.rmtree(out)

        print(
            "| pipeline | seconds | files/s | MB/s | converted | failed or excluded | "
            "speed-up vs naive |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, seconds, ok, bad in rows:
            print(
                f"| {name} | {seconds:.2f} | {len(files) / seconds:.1f} | "
                f"{megabytes / seconds:.2f} | {ok} | {bad} | {naive_s / seconds:.2f}x |"
            )
        one = timings[1]
        print(f"\npure decode of the {len(export.image_paths)} kept images: {decode_s:.2f} s")
        print(f"ingest overhead over decode, 1 worker: {(one - decode_s) / decode_s:+.0%}")
        for workers, seconds in timings.items():
            if workers > 1:
                print(
                    f"scaling 1 -> {workers} workers: {one / seconds:.2f}x "
                    f"(efficiency {one / seconds / workers:.0%})"
                )


if __name__ == "__main__":
    main()
