"""Peak memory: ``usdcm ingest``, and ``usdcm train`` with ``data.cache_rate`` 1.0 and 0.25.

Every measurement runs in a fresh child process (this script with ``--child``), which does
the work and reports its own peak RSS (``VmHWM``: ``ru_maxrss`` would include this
script's own size, inherited at the fork) and ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of
its own children (ingest's forked worker processes: the largest one, pages shared with the
parent included). A child that only imports
the same modules gives the floor each figure should be read against. The baseline of the
training rows is ``cache_rate: 1.0`` (the default: every preprocessed frame in RAM).

Run: ``python benchmarks/memory.py [--patients 40] [--frames 32]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import describe, maxrss_mib, peak_rss_mib

TRAIN_CONFIG: dict[str, Any] = {
    "data": {"image_size": [128, 128], "eval_frames": 4},
    "optim": {"epochs": 1, "batch_size": 32},
    "runtime": {"device": "cpu"},
}


def child(kind: str, export: Path, out: Path, cache_rate: float) -> None:
    """Do one measured piece of work in this process, print a JSON line."""
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if kind == "floor-ingest":
        from usdcm.ingest import ingest  # noqa: F401  # imported only to count its memory
    elif kind == "floor-train":
        import torch  # noqa: F401  # imported only to count its memory

        from usdcm.data import datasets, transforms  # noqa: F401
        from usdcm.training.run import train  # noqa: F401
    elif kind.startswith("ingest"):
        from usdcm.ingest import IngestOptions, ingest

        workers = int(kind.split("-")[1])
        result = ingest(export, out, IngestOptions(labels=export / "labels.csv", workers=workers))
        extra["images"] = result.n_images
    else:
        from usdcm.config import config_from_dict
        from usdcm.training.run import train

        values = json.loads(json.dumps(TRAIN_CONFIG))
        values["data"]["cache_rate"] = cache_rate
        trained = train(export / "manifest.csv", config_from_dict(values), out)
        extra["cache_mb"] = trained.cache_bytes / 1e6
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


def measure(kind: str, export: Path, out: Path, cache_rate: float = 1.0) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, str(export), str(out), str(cache_rate)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--frames", type=int, default=32, help="typical cine length")
    args = parser.parse_args()

    from usdcm.synth import write_export

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export = write_export(root / "pacs", patients=args.patients, seed=0, frames=args.frames)
        files = [p for p in export.root.rglob("*") if p.is_file()]
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        print(f"machine: {describe()}")
        print(
            f"export: {len(files)} files, {megabytes:.1f} MB, {len(export.image_paths)} images, "
            f"cine of about {args.frames} frames\n"
        )
        floor = measure("floor-ingest", root, root / "unused")
        rows = [("ingest imports only (floor)", floor, "")]
        for workers in (1, 2):
            result = measure(f"ingest-{workers}", export.root, root / f"data-{workers}")
            per_mb = (result["self_mib"] - floor["self_mib"]) / megabytes
            note = f"{result['images']} images; {per_mb:.2f} MiB above floor per MB of export"
            rows.append((f"usdcm ingest --workers {workers}", result, note))
        floor = measure("floor-train", root, root / "unused")
        rows.append(("torch + training imports only (floor)", floor, ""))
        data = root / "data-1"
        baseline: dict[str, Any] = {}
        for rate in (1.0, 0.25):
            result = measure("train", data, root / f"run-{rate}", rate)
            baseline = baseline or result
            ratio = (result["self_mib"] - floor["self_mib"]) / (
                baseline["self_mib"] - floor["self_mib"]
            )
            note = (
                f"cache {result['cache_mb']:.0f} MB; peak above floor "
                f"{ratio:.2f}x cache_rate 1.0 ({result['self_mib'] / baseline['self_mib']:.2f}x "
                "in total)"
            )
            rows.append((f"usdcm train, cache_rate {rate}, 1 epoch, 128x128", result, note))

        print("| process | seconds | peak RSS MiB | largest child MiB | notes |")
        print("| --- | ---: | ---: | ---: | --- |")
        for name, result, note in rows:
            child_mib = result["children_mib"]
            print(
                f"| {name} | {result['seconds']:.1f} | {result['self_mib']:.0f} | "
                f"{child_mib:.0f} | {note} |"
                if child_mib
                else f"| {name} | {result['seconds']:.1f} | {result['self_mib']:.0f} | - | {note} |"
            )


if __name__ == "__main__":
    main()
