"""``usdcm ingest --scheduler``: the same outputs on a Dask cluster as from the process pool.

One small test on a ``LocalCluster`` runs in every suite; the ones that start a real
``dask scheduler`` and two ``dask worker`` processes on loopback ports are marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.evaluation.conftest import Evaluated, evaluated_run
from usdcm.cli.app import app
from usdcm.errors import SchedulerError
from usdcm.ingest import IngestOptions, IngestResult, ingest
from usdcm.synth import ExportSummary

DASK = Path(sys.executable).with_name("dask")
__all__ = ["evaluated_run"]  # the trained run of the evaluation tests, for predict


def outputs(out: Path, *, counts: bool = True) -> dict[str, bytes | object]:
    """Every output of an ingest, ``ingest.json`` without its timings (and without the
    counts of images converted and reused unless ``counts``)."""
    summary = json.loads((out / "ingest.json").read_text(encoding="utf-8"))
    del summary["timings_s"]
    if not counts:
        del summary["n_converted"], summary["n_reused"]
    found: dict[str, bytes | object] = {
        "manifest.csv": (out / "manifest.csv").read_bytes(),
        "excluded.csv": (out / "excluded.csv").read_bytes(),
        "ingest.json": summary,
    }
    for image in sorted((out / "images").iterdir()):
        found[f"images/{image.name}"] = image.read_bytes()
    return found


class Recorder:
    """A progress reporter that counts what each phase was told."""

    def __init__(self) -> None:
        self.done: dict[str, int] = {}
        self.steps: dict[str, int] = {}
        self.name = ""

    def phase(self, name: str, total: int) -> None:
        self.name = name
        self.done[name] = self.steps[name] = 0

    def advance(self, count: int = 1) -> None:
        self.done[self.name] += count
        self.steps[self.name] += 1


def convert_records(journal: Path) -> int:
    return journal.read_bytes().count(b'"t":"convert"') if journal.exists() else 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_local_cluster_writes_the_same_bytes_as_the_process_pool(
    synth_export: ExportSummary, ingested: tuple[IngestResult, Path], tmp_path: Path
) -> None:
    reference, reference_out = ingested
    out = tmp_path / "out"
    options = IngestOptions(
        labels=synth_export.labels_path,
        workers=2,
        secret_path=reference_out / ".usdcm" / "secret",
        scheduler="local",
    )
    progress = Recorder()
    result = ingest(synth_export.root, out, options, progress)
    assert progress.done == {"scan headers": result.n_files, "convert images": result.n_converted}
    assert progress.steps["convert images"] > 1  # it follows the futures, not one jump
    assert result.n_images == reference.n_images
    assert result.excluded_by_code == reference.excluded_by_code
    assert outputs(out) == outputs(reference_out)

    again = ingest(synth_export.root, out, options)  # incremental, from the journal
    assert (again.n_converted, again.n_reused) == (0, result.n_converted)
    assert outputs(out, counts=False) == outputs(reference_out, counts=False)


def test_a_worker_that_cannot_see_the_output_stops_the_run_with_one_line(
    synth_export: ExportSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import usdcm.parallel

    def blind(readable: list[str], writable: list[str], marker: str) -> str | None:
        return writable[0] if writable else None

    monkeypatch.setattr(usdcm.parallel, "_lacking", blind)
    out = tmp_path / "out"
    command = ["ingest", str(synth_export.root), "--out", str(out), "-q"]
    done = CliRunner().invoke(app, [*command, "--workers", "1", "--scheduler", "local"])
    assert done.exit_code != 0
    assert f"cannot see {out}; SOURCE and DIR must be on a filesystem" in done.output
    assert not (out / "manifest.csv").exists()
    assert not list((out / ".usdcm").glob("journal*"))  # nothing done before the check

    bad = CliRunner().invoke(app, [*command, "--scheduler", "dask"])
    assert bad.exit_code != 0
    assert "--scheduler 'dask' is not understood" in bad.output


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], list[int]]]:
    """A real ``dask scheduler`` and two single-threaded ``dask worker`` processes (no nanny,
    so a killed worker stays dead) on loopback ports: ``(address, scheduler, worker pids)``."""
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    host, port = address.removeprefix("tcp://").split(":")
    scheduler = subprocess.Popen(
        [str(DASK), "scheduler", "--host", host, "--port", port, "--no-dashboard"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers = [
        subprocess.Popen(
            [str(DASK), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        from distributed import Client

        with Client(address, timeout=60) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(2, timeout=60)
        yield address, scheduler, [worker.pid for worker in workers]
    finally:
        for process in [*workers, scheduler]:
            if process.poll() is None:
                process.kill()
            process.wait()


def start_ingest(source: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "usdcm", "ingest", str(source), "--out", str(out), "-q"]
    return subprocess.Popen([*command, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_converts(process: subprocess.Popen[bytes], journal: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while convert_records(journal) < count and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert process.poll() is None, "ingest finished before the cluster could be hurt"


def ingest_on_cluster(
    synth_export: ExportSummary, reference_out: Path, out: Path, address: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``usdcm ingest --scheduler address`` into ``out`` with the reference's secret,
    and return once two images are converted (the run is under way, not finished)."""
    (out / ".usdcm").mkdir(parents=True)
    shutil.copy(reference_out / ".usdcm" / "secret", out / ".usdcm" / "secret")
    labels = ["--labels", str(synth_export.labels_path), "--workers", "2"]
    process = start_ingest(synth_export.root, out, *labels, "--scheduler", address)
    wait_for_converts(process, out / ".usdcm" / "journal.jsonl", 2)
    return process, out


def test_a_real_scheduler_with_a_worker_killed_mid_run_gives_the_same_result(
    synth_export: ExportSummary,
    ingested: tuple[IngestResult, Path],
    dask_cluster: tuple[str, subprocess.Popen[bytes], list[int]],
    tmp_path: Path,
) -> None:
    address, _scheduler, workers = dask_cluster
    _, reference_out = ingested
    process, out = ingest_on_cluster(synth_export, reference_out, tmp_path / "out", address)
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    assert outputs(out) == outputs(reference_out)


@pytest.mark.slow
def test_a_lost_scheduler_stops_with_one_line_and_the_rerun_resumes(
    synth_export: ExportSummary,
    ingested: tuple[IngestResult, Path],
    dask_cluster: tuple[str, subprocess.Popen[bytes], list[int]],
    tmp_path: Path,
) -> None:
    address, scheduler, _workers = dask_cluster
    _, reference_out = ingested
    process, out = ingest_on_cluster(synth_export, reference_out, tmp_path / "out", address)
    journal = out / ".usdcm" / "journal.jsonl"
    scheduler.kill()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert "Lost the Dask cluster" in lines[-1] or "Cannot reach" in lines[-1], lines[-5:]
    assert "Traceback" not in stderr.decode()
    assert not (out / "manifest.csv").exists()
    done_before = convert_records(journal)

    options = IngestOptions(labels=synth_export.labels_path, workers=2, scheduler="local")
    result = ingest(synth_export.root, out, options)
    assert result.n_reused >= done_before >= 2
    assert outputs(out, counts=False) == outputs(reference_out, counts=False)


def test_an_unknown_scheduler_is_refused_before_any_work(
    synth_export: ExportSummary, tmp_path: Path
) -> None:
    with pytest.raises(SchedulerError, match="is not understood"):
        ingest(synth_export.root, tmp_path / "out", IngestOptions(scheduler="yarn"))


@pytest.mark.slow  # about 25 s on 2 busy cores: each worker imports torch
def test_predict_on_a_local_cluster_gives_the_process_pool_rows(evaluated_run: Evaluated) -> None:
    from usdcm.inference.model import load_trained_model
    from usdcm.inference.predict import predict_source
    from usdcm.privacy import ProjectSecret

    export = evaluated_run.ingested.export
    trained = load_trained_model(evaluated_run.run, "cpu")
    secret = ProjectSecret.load_or_create(evaluated_run.ingested.root / ".usdcm" / "secret")
    pool = predict_source(trained, export.root, secret=secret, workers=2)
    dask = predict_source(trained, export.root, secret=secret, workers=2, scheduler="local")
    assert dask.excluded == pool.excluded
    assert pool.rows and len(dask.rows) == len(pool.rows)
    for on_dask, on_pool in zip(dask.rows, pool.rows, strict=True):
        # images reach the model in batches made in completion order: float sums may differ
        probabilities = [key for key in on_pool if key.startswith("prob_")]
        assert {k: v for k, v in on_dask.items() if k not in probabilities} == {
            k: v for k, v in on_pool.items() if k not in probabilities
        }
        for key in probabilities:
            assert on_dask[key] == pytest.approx(on_pool[key], abs=1e-5)
