"""Ingest throughput: ``usdcm ingest`` with 1..N workers against the naive loop and dcm2niix.

The baseline, measured in the same run on the same synthetic export, is the loop most
scripts start from: ``dcmread`` -> ``pixel_array`` -> ``nibabel.save``, one file at a time,
skipping what fails. A second reference is the pure decode time (``dcmread`` plus usdcm's
own ``decode_frames``) of the files ingest keeps: ingest's overhead is measured against it.
When ``dcm2niix`` is on PATH it is run on the export folder too (timed, outputs counted),
and once per file so that every tool's failures can be listed by the category the export
itself knows (transfer syntax, photometric interpretation, no preamble, junk kind).
Last, ``--scheduler local`` (a Dask LocalCluster of 2 worker processes, its start
included) against the process pool of 2 workers, on the same export, as a ratio of times.

The same naive loop, pure decode and ingest at 1..N workers then run on an export of real
files (``--real N``): pydicom's bundled ultrasound files (palette, RGB, YBR JPEG cine,
JPEG 2000, big endian), each copied N times with new Study/Series/SOP UIDs and patient IDs.
On both exports ingest also runs with 1 worker for each ``--compress`` choice, with the
size of the images it wrote. ``--repeats R`` takes the median of R rounds, each round
running every pipeline once in turn, so that a busy machine slows them alike.

Scaling from 1 to 2 workers can only be judged against what the machine itself allows, so
the run starts by measuring it: 2 copies of a CPU-bound loop in 1 process, then in 2
(pure Python, and numpy passes over 16 MB arrays, which are memory-bound). ``--busy K``
keeps K other processes spinning through every measurement (a busy machine).

Run: ``python benchmarks/ingest.py [--patients 40] [--frames 8] [--real 20] [--repeats 1]
[--dask-repeats 3] [--busy 0]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import UID, generate_uid

from _machine import busy, describe, parallel_ceiling
from usdcm.dicom.pixels import decode_frames
from usdcm.ingest import IngestOptions, ingest
from usdcm.ingest.convert import Compression
from usdcm.synth import ExportSummary, write_export

DCM2NIIX_TIMEOUT_S = 120
BUNDLED_ULTRASOUND = (
    "examples_palette.dcm",  # PALETTE COLOR, a region one pixel past the image
    "examples_ybr_color.dcm",  # 30-frame YBR_FULL_422 JPEG baseline cine
    "examples_rgb_color.dcm",  # RGB, explicit VR
    "examples_jpeg2k.dcm",  # YBR_RCT, JPEG 2000 lossless
    "ExplVR_BigEnd.dcm",  # RGB, explicit VR big endian
)
"""Every file with Modality US that pydicom 3.0 bundles (``pydicom.data``)."""


def naive_loop(files: list[Path], out: Path) -> tuple[float, set[Path]]:
    """dcmread + pixel_array + nibabel.save per file; returns (seconds, converted files)."""
    out.mkdir()
    converted: set[Path] = set()
    started = time.perf_counter()
    for index, path in enumerate(files):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = pydicom.dcmread(path)
                array = dataset.pixel_array
            nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), out / f"{index}.nii.gz")
            converted.add(path)
        except Exception:
            continue
    return time.perf_counter() - started, converted


def decode_only(files: list[Path]) -> float:
    started = time.perf_counter()
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decode_frames(pydicom.dcmread(path, force=True))
    return time.perf_counter() - started


def categories(export: ExportSummary, files: list[Path]) -> dict[Path, str]:
    """What each file is, as the synthetic export knows it; valid images first by codec."""
    found: dict[Path, str] = {}
    for record in export.images:
        syntax = UID(record.transfer_syntax_uid).name.replace(" Little Endian", "")
        preamble = "" if record.part10 else ", no preamble"
        found[record.path] = f"image: {syntax}, {record.photometric}{preamble}"
    for kind, path in export.junk.items():
        found[path] = f"junk: {kind}"
    for path in files:
        found.setdefault(path, f"junk: {path.name}")
    return found


def dcm2niix_folder(export: Path, out: Path) -> tuple[float, int, int, str]:
    """dcm2niix on the whole export: (seconds, exit code, NIfTI files written, last message)."""
    out.mkdir()
    command = ["dcm2niix", "-z", "y", "-b", "n", "-f", "%s_%r_%o", "-o", str(out), str(export)]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DCM2NIIX_TIMEOUT_S, check=False
        )
        code, log = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        code, log = -1, "timed out"
    seconds = time.perf_counter() - started
    written = sum(1 for p in out.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    lines = [line for line in log.splitlines() if line.strip()]
    return seconds, code, written, lines[-1] if lines else ""


def dcm2niix_per_file(files: list[Path], out: Path) -> tuple[float, set[Path]]:
    """dcm2niix -s y on each file alone; a file counts as converted if a NIfTI appeared."""
    converted: set[Path] = set()
    started = time.perf_counter()
    for index, path in enumerate(files):
        target = out / str(index)
        target.mkdir(parents=True)
        command = ["dcm2niix", "-s", "y", "-z", "n", "-b", "n", "-o", str(target), str(path)]
        try:
            subprocess.run(command, capture_output=True, timeout=DCM2NIIX_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            continue
        if any(p.name.endswith((".nii", ".nii.gz")) for p in target.iterdir()):
            converted.add(path)
    return time.perf_counter() - started, converted


def usdcm_converted(out: Path, source: Path) -> set[Path]:
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return {source / row["source_path"] for row in csv.DictReader(handle)}


def write_bundled_export(root: Path, copies: int) -> list[Path]:
    """pydicom's bundled ultrasound files, ``copies`` times: copy ``i`` is patient ``i``
    with new Study, Series and SOP Instance UIDs (the same for the same ``i`` every run)."""
    paths: list[Path] = []
    sources = [(name, pydicom.dcmread(get_testdata_file(name))) for name in BUNDLED_ULTRASOUND]
    for copy in range(copies):
        folder = root / f"patient{copy:04d}"
        folder.mkdir(parents=True)
        for name, dataset in sources:
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                setattr(dataset, keyword, generate_uid(entropy_srcs=[name, keyword, str(copy)]))
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            dataset.PatientID = f"REAL{copy:04d}"
            dataset.PatientName = f"Copy^{copy:04d}"
            path = folder / name.removesuffix(".dcm")
            dataset.save_as(path)
            paths.append(path)
    return paths


def run_ingest(source: Path, out: Path, workers: int, compress: Compression) -> tuple[float, int]:
    """``usdcm ingest`` into a fresh ``out``: (seconds, bytes of the images written)."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    ingest(source, out, IngestOptions(workers=workers, compress=compress))
    seconds = time.perf_counter() - started
    image_bytes = sum(path.stat().st_size for path in (out / "images").iterdir())
    return seconds, image_bytes


def measure(
    name: str,
    source: Path,
    files: list[Path],
    root: Path,
    *,
    max_workers: int,
    repeats: int,
    extra_rows: list[tuple[str, float, int, int]] | None = None,
) -> tuple[set[Path], set[Path]]:
    """Naive loop, pure decode, ingest at 1..``max_workers`` workers and each ``--compress``
    at 1 worker on one export; prints the table and the ratios. Returns the files the naive
    loop converted and those ingest kept."""
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    first = root / f"{name}-first"
    ingest(source, first, IngestOptions(workers=1))  # also warms the page cache for all
    kept = sorted(usdcm_converted(first, source))
    n_excluded = len(files) - len(kept)
    shutil.rmtree(first)
    worker_counts = sorted({1, *range(2, max_workers + 1)})
    variants = [c for c in Compression if c is not Compression.FAST]
    runs: dict[str, list[float]] = defaultdict(list)
    image_bytes: dict[str, int] = {}
    naive_ok: set[Path] = set()
    for _ in range(repeats):
        naive_dir = root / f"{name}-naive"
        shutil.rmtree(naive_dir, ignore_errors=True)
        seconds, naive_ok = naive_loop(files, naive_dir)
        runs["naive"].append(seconds)
        runs["decode"].append(decode_only(kept))
        for workers in worker_counts:
            key = f"w{workers}"
            seconds, image_bytes[key] = run_ingest(
                source, root / f"{name}-{key}", workers, Compression.FAST
            )
            runs[key].append(seconds)
        for compress in variants:
            key = f"c{compress.value}"
            seconds, image_bytes[key] = run_ingest(source, root / f"{name}-{key}", 1, compress)
            runs[key].append(seconds)
        for kind, ratio in parallel_ceiling(repeats=1).items():
            runs[f"ceiling-{kind}"].append(ratio)
    median = {key: float(np.median(values)) for key, values in runs.items()}
    naive_s, decode_s = median["naive"], median["decode"]
    timings = {workers: median[f"w{workers}"] for workers in worker_counts}
    rows = [("naive loop (baseline)", naive_s, len(naive_ok), len(files) - len(naive_ok))]
    rows.extend(extra_rows or [])
    for workers, seconds in timings.items():
        rows.append((f"usdcm ingest --workers {workers}", seconds, len(kept), n_excluded))
    for compress in variants:
        label = f"usdcm ingest --workers 1 --compress {compress.value}"
        rows.append((label, median[f"c{compress.value}"], len(kept), n_excluded))
    of = f"median of {repeats} rounds" if repeats > 1 else "one round"
    print(f"{name} export: {len(files)} files, {megabytes:.1f} MB, {len(kept)} kept ({of})")
    print(
        "| pipeline | seconds | files/s | MB/s | converted | failed or excluded | "
        "speed-up vs naive |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, seconds, ok, bad in rows:
        print(
            f"| {label} | {seconds:.2f} | {len(files) / seconds:.1f} | "
            f"{megabytes / seconds:.2f} | {ok} | {'-' if bad < 0 else bad} | "
            f"{naive_s / seconds:.2f}x |"
        )
    one = timings[1]
    print(f"\npure decode of the {len(kept)} kept images: {decode_s:.2f} s")
    print(f"ingest overhead over decode, 1 worker: {(one - decode_s) / decode_s:+.0%}")
    for workers, seconds in timings.items():
        if workers > 1:
            per_round = [a / b for a, b in zip(runs["w1"], runs[f"w{workers}"], strict=True)]
            print(
                f"scaling 1 -> {workers} workers: {one / seconds:.2f}x "
                f"(efficiency {one / seconds / workers:.0%}; the ratio within each round: "
                f"median {np.median(per_round):.2f}x, {min(per_round):.2f}-{max(per_round):.2f}); "
                f"against the naive loop: {naive_s / seconds:.2f}x"
            )
    python, numpy = (runs[f"ceiling-{kind}"] for kind in ("python", "numpy"))
    print(
        "this machine's own 1 -> 2 process ceiling in the same rounds (2 copies of a loop, "
        f"2 processes against 1): pure Python median {np.median(python):.2f}x "
        f"({min(python):.2f}-{max(python):.2f}), numpy over 16 MB {np.median(numpy):.2f}x "
        f"({min(numpy):.2f}-{max(numpy):.2f})"
    )
    print("\n| --compress (1 worker) | seconds | over decode | images MB |")
    print("| --- | ---: | ---: | ---: |")
    for compress in Compression:
        key = "w1" if compress is Compression.FAST else f"c{compress.value}"
        seconds = median[key]
        print(
            f"| {compress.value} | {seconds:.2f} | {(seconds - decode_s) / decode_s:+.0%} | "
            f"{image_bytes[key] / 1e6:.1f} |"
        )
    return naive_ok, set(kept)


def print_failures(kinds: dict[Path, str], converted: dict[str, set[Path]]) -> None:
    """Per category: how many files, and how many each tool converted."""
    by_kind: dict[str, list[Path]] = defaultdict(list)
    for path, kind in kinds.items():
        by_kind[kind].append(path)
    tools = list(converted)
    print("\nconverted files by category (images: all should convert; junk: none should)")
    print(f"| category | files | {' | '.join(tools)} |")
    print(f"| --- | ---: | {' | '.join('---:' for _ in tools)} |")
    for kind in sorted(by_kind):
        paths = by_kind[kind]
        counts = [sum(p in converted[tool] for p in paths) for tool in tools]
        print(f"| {kind} | {len(paths)} | {' | '.join(str(c) for c in counts)} |")
    images = [p for p, kind in kinds.items() if kind.startswith("image")]
    junk = [p for p, kind in kinds.items() if not kind.startswith("image")]
    for tool in tools:
        missed = Counter(kinds[p] for p in images if p not in converted[tool])
        wrong = Counter(kinds[p] for p in junk if p in converted[tool])
        print(
            f"{tool}: {len(images) - sum(missed.values())}/{len(images)} images converted; "
            f"failed on {dict(missed) or 'none'}; converted junk {dict(wrong) or 'none'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=8, help="typical cine length")
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--real",
        type=int,
        default=20,
        help="copies of pydicom's bundled ultrasound files in the real-file export (0: skip)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of every pipeline; the median is shown"
    )
    parser.add_argument(
        "--dask-repeats",
        type=int,
        default=3,
        help="runs of each of Dask LocalCluster and process pool at 2 workers (0: skip)",
    )
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        help="other processes kept spinning during every measurement (a busy machine)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, busy(args.busy):
        root = Path(tmp)
        export = write_export(
            root / "pacs", patients=args.patients, seed=args.seed, frames=args.frames
        )
        files = sorted(p for p in export.root.rglob("*") if p.is_file())
        print(f"machine: {describe()}; {args.busy} other busy processes")
        print()

        extra_rows: list[tuple[str, float, int, int]] = []
        converted: dict[str, set[Path]] = {}
        dcm2niix = shutil.which("dcm2niix")
        folder_note = ""
        if dcm2niix:
            seconds, code, written, last = dcm2niix_folder(export.root, root / "d2n")
            extra_rows.append(("dcm2niix on the folder", seconds, written, -1))
            folder_note = f"dcm2niix on the folder: exit code {code}, {written} NIfTI files"
            if code != 0:
                folder_note += f"; its last message: {last!r}"
            per_file_s, converted["dcm2niix -s y"] = dcm2niix_per_file(files, root / "d2n-1")
            n_ok = len(converted["dcm2niix -s y"])
            extra_rows.append(("dcm2niix -s y, per file", per_file_s, n_ok, len(files) - n_ok))
        else:
            print("dcm2niix is not on PATH: its rows are skipped (apt-get install dcm2niix)\n")
        naive_ok, kept = measure(
            "synthetic",
            export.root,
            files,
            root,
            max_workers=args.max_workers,
            repeats=args.repeats,
            extra_rows=extra_rows,
        )
        if folder_note:
            print(f"\n{folder_note}")
        converted = {"naive loop": naive_ok, **converted, "usdcm ingest": kept}
        print_failures(categories(export, files), converted)

        if args.real > 0:
            real_files = write_bundled_export(root / "real", args.real)
            print(
                f"\nreal files: pydicom's {len(BUNDLED_ULTRASOUND)} bundled ultrasound files "
                f"x {args.real}, new UIDs per copy"
            )
            measure(
                "real",
                root / "real",
                real_files,
                root,
                max_workers=args.max_workers,
                repeats=args.repeats,
            )
        if args.dask_repeats > 0:
            dask_against_pool(export.root, root, args.dask_repeats)


def dask_against_pool(source: Path, root: Path, repeats: int) -> None:
    """``--scheduler local`` against the process pool, 2 workers each, alternated; the
    median of ``repeats`` runs each, the cluster's start included (a user pays it)."""
    from usdcm.parallel import open_scheduler

    seconds: dict[str, list[float]] = {"process": [], "local": []}
    for _ in range(repeats):
        for scheduler in seconds:
            out = root / f"usdcm-{scheduler}"
            started = time.perf_counter()
            ingest(source, out, IngestOptions(workers=2, scheduler=scheduler))
            seconds[scheduler].append(time.perf_counter() - started)
            shutil.rmtree(out)
    started = time.perf_counter()
    with open_scheduler("local", workers=2):
        pass
    start_s = time.perf_counter() - started
    pool, dask = (float(np.median(seconds[name])) for name in ("process", "local"))
    print(f"\nDask LocalCluster vs process pool, 2 workers each, median of {repeats}:")
    print(f"process pool: {pool:.2f} s; Dask LocalCluster: {dask:.2f} s")
    print(
        f"Dask / process pool time: {dask / pool:.2f}x "
        f"(LocalCluster start and stop alone: {start_s:.2f} s)"
    )


if __name__ == "__main__":
    main()
