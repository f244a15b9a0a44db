"""Ingest scaling: ``usdcm ingest --workers N`` against ``--workers 1`` on real files.

The baseline is usdcm's own ingest with 1 worker, measured in the same rounds on the same
export: pydicom's bundled ultrasound files copied ``--real`` times with new UIDs and patient
IDs (as ``benchmarks/ingest.py --real`` writes them). Each round runs 1 worker, then N, and
then measures this machine's own 1 -> 2 process ceiling (two copies of a pure-Python loop in
2 processes against 1), so that a machine whose speed drifts between rounds is judged
against itself. The scan and conversion phases come from each run's ``ingest.json``.

Run: ``python benchmarks/ingest_scaling.py [--real 100] [--workers 2] [--rounds 4]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from _machine import describe, parallel_ceiling
from ingest import run_ingest, write_bundled_export
from usdcm.ingest.convert import Compression


def _phases(out: Path) -> tuple[float, float]:
    timings = json.loads((out / "ingest.json").read_text())["timings_s"]
    return float(timings["scan_s"]), float(timings["convert_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=int, default=100, help="copies of the 5 bundled files")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        files = write_bundled_export(root / "export", args.real)
        print(f"real export: {len(files)} files (pydicom's 5 ultrasound files x {args.real})")
        print(
            f"| round | 1 worker s | {args.workers} workers s | ratio | scan ratio |"
            " convert ratio | machine 1 -> 2 ceiling |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        single, multi, ratios, ceilings = [], [], [], []
        for index in range(args.rounds):
            one, _ = run_ingest(root / "export", root / "out1", 1, Compression.FAST)
            scan_one, convert_one = _phases(root / "out1")
            many, _ = run_ingest(root / "export", root / "outN", args.workers, Compression.FAST)
            scan_many, convert_many = _phases(root / "outN")
            ceiling = parallel_ceiling(repeats=1)["python"]
            single.append(one)
            multi.append(many)
            ratios.append(one / many)
            ceilings.append(ceiling)
            print(
                f"| {index + 1} | {one:.2f} | {many:.2f} | {one / many:.2f}x |"
                f" {scan_one / scan_many:.2f}x | {convert_one / convert_many:.2f}x |"
                f" {ceiling:.2f}x |"
            )
    median_one, median_many = statistics.median(single), statistics.median(multi)
    print(
        f"medians: 1 worker {median_one:.2f} s, {args.workers} workers {median_many:.2f} s:"
        f" {median_one / median_many:.2f}x against 1 worker (within rounds: median"
        f" {statistics.median(ratios):.2f}x, {min(ratios):.2f}-{max(ratios):.2f});"
        f" the machine's own 1 -> 2 ceiling: median {statistics.median(ceilings):.2f}x"
        f" ({min(ceilings):.2f}-{max(ceilings):.2f})"
    )


if __name__ == "__main__":
    main()
