"""kill -9 in the middle of an ingest, then run it again: nothing lost, nothing twice."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from usdcm.ingest import IngestOptions, ingest
from usdcm.synth import ExportSummary


def convert_records(journal: Path) -> int:
    if not journal.exists():
        return 0
    return journal.read_bytes().count(b'"t":"convert"')


def test_killed_ingest_leaves_no_manifest_and_the_rerun_completes(
    synth_export: ExportSummary, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    journal = out / ".usdcm" / "journal.jsonl"
    command = [sys.executable, "-m", "usdcm", "ingest", str(synth_export.root)]
    process = subprocess.Popen(
        [*command, "--out", str(out), "--workers", "1", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while convert_records(journal) < 2 and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "ingest finished before it could be killed"
    assert not (out / "manifest.csv").exists()
    done_before = convert_records(journal)
    assert done_before >= 2

    result = ingest(synth_export.root, out, IngestOptions(workers=1))
    assert result.n_reused >= done_before
    decode_errors = result.excluded_by_code.get("decode_error", 0)
    assert result.n_converted + result.n_reused == result.n_images + decode_errors
    with (out / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(synth_export.image_paths) == result.n_images
    assert len({row["sop_uid"] for row in rows}) == len(rows)
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == sorted(Path(row["image_path"]).name for row in rows)  # no temp leftovers
