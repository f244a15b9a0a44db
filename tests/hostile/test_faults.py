"""Faults: kill -9 during training, and a full disk during ingest.

(kill -9 during ingest is ``tests/ingest/test_crash_resume.py``.)

The full disk is simulated two ways. Always: the writers of ``usdcm.atomic`` (every output
file and image) and of the ingest journal see a disk with N free bytes; a write past it
writes what fits and fails with ``ENOSPC``, as the kernel does; the command runs in this
process (``--workers 1``) so the fault reaches the image writes too. When this process may
mount (root, as here and in CI): a real tmpfs of 64 KiB, with the command in a subprocess
and two workers, then a remount to free space.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import usdcm.atomic
import usdcm.ingest.journal
from tests.ingest.conftest import write_us
from tests.training.conftest import tiny_config, write_tiny_manifest
from usdcm.artifacts.manifest import read_manifest
from usdcm.cli.app import app
from usdcm.synth import ExportSummary, write_export

# ---------------------------------------------------------------- kill -9 during training


def metric_lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def without_seconds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in records]


def test_train_killed_with_sigkill_resumes_to_the_uninterrupted_metrics(tmp_path: Path) -> None:
    epochs = 6
    manifest = write_tiny_manifest(tmp_path / "data", counts={"train": 32, "val": 8})
    config_path = tmp_path / "tiny.yaml"
    optim = {"epochs": epochs, "patience": 100}  # no early stop: every epoch runs
    config = tiny_config(optim=optim, augment={"prob": 0.5, "flip_lr_prob": 0.5})
    config_path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads, the same float sums

    def command(run_dir: Path) -> list[str]:
        return [
            *[sys.executable, "-m", "usdcm", "train", str(manifest)],
            *["--config", str(config_path), "--out", str(run_dir), "--quiet"],
        ]

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    whole = tmp_path / "whole"
    uninterrupted = subprocess.Popen(command(whole), **quiet)  # alongside, on the other core
    run_dir = tmp_path / "cut"
    process = subprocess.Popen(command(run_dir), **quiet)
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and not (
            (run_dir / "last.pt").exists() and metric_lines(run_dir)
        ):
            assert time.monotonic() < deadline, "training never finished an epoch"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed"
    done = len(metric_lines(run_dir))
    assert 1 <= done < epochs

    resumed = subprocess.run(
        [*command(run_dir), "--resume"], capture_output=True, text=True, env=env, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert uninterrupted.wait(timeout=300) == 0

    cut_records = metric_lines(run_dir)
    assert [r["epoch"] for r in cut_records] == list(range(epochs))  # each epoch once
    assert without_seconds(cut_records) == without_seconds(metric_lines(whole))


# ---------------------------------------------------------------- a full disk during ingest


class Disk:
    """A disk with ``free`` bytes left; ``None`` means unlimited (and counts what is used)."""

    def __init__(self, free: int | None) -> None:
        self.free = free
        self.used = 0

    def take(self, wanted: int) -> int:
        granted = wanted if self.free is None else min(wanted, self.free)
        if self.free is not None:
            self.free -= granted
        self.used += granted
        return granted


def no_space(filename: Any = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


class MeteredFile:
    """A file object whose writes draw on a :class:`Disk`; writes past it fail."""

    def __init__(self, handle: Any, disk: Disk) -> None:
        self._handle = handle
        self._disk = disk

    def write(self, data: Any) -> int:
        size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
        granted = self._disk.take(size)
        if granted < size:
            self._handle.write(data[: granted // 4])  # some of it lands, as on a real disk
            raise no_space()
        result: int = self._handle.write(data)
        return result

    def __enter__(self) -> MeteredFile:
        self._handle.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


class OsWithDisk(ModuleType):
    """``os`` for one module, with ``fdopen`` and ``write`` drawing on a :class:`Disk`."""

    def __init__(self, disk: Disk) -> None:
        super().__init__("os")
        self._disk = disk

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, *args: Any, **kwargs: Any) -> MeteredFile:
        return MeteredFile(os.fdopen(fd, *args, **kwargs), self._disk)

    def write(self, fd: int, data: bytes) -> int:
        granted = self._disk.take(len(data))
        if granted == 0 and data:
            raise no_space()
        return os.write(fd, data[:granted])  # a short write when the disk fills


def with_disk(monkeypatch: pytest.MonkeyPatch, free: int | None) -> Disk:
    disk = Disk(free)
    monkeypatch.setattr(usdcm.atomic, "os", OsWithDisk(disk))
    monkeypatch.setattr(usdcm.ingest.journal, "os", OsWithDisk(disk))
    return disk


runner = CliRunner()


def run_ingest(source: Path, out: Path) -> Any:
    return runner.invoke(app, ["ingest", str(source), "--out", str(out), "--workers", "1", "-q"])


def snapshot(out: Path) -> dict[str, bytes | None]:
    names = ("manifest.csv", "excluded.csv", "ingest.json")
    return {name: (out / name).read_bytes() if (out / name).exists() else None for name in names}


def check_complete(source: Path, out: Path, n_images: int) -> None:
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == n_images == len({row["sop_uid"] for row in rows})
    images = sorted(path.name for path in (out / "images").iterdir())
    assert images == sorted(Path(row["image_path"]).name for row in rows)  # no temp files
    excluded = (out / "excluded.csv").read_text(encoding="utf-8").splitlines()
    n_files = sum(len(files) for _, _, files in os.walk(source))
    assert len(rows) + len(excluded) - 1 == n_files
    assert not list(out.rglob("*.tmp")), "temp files left behind"


@pytest.fixture(scope="module")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> ExportSummary:
    return write_export(tmp_path_factory.mktemp("disk") / "export", patients=3, seed=11)


@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.3, 0.8, 0.995])
def test_a_full_disk_is_one_clear_line_and_never_a_partial_manifest(
    small_export: ExportSummary,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fraction: float,
) -> None:
    source = tmp_path / "export"
    shutil.copytree(small_export.root, source, symlinks=True)
    n_images = len(small_export.image_paths)

    # a fresh output folder: the manifest is absent after the failure
    with monkeypatch.context() as patch:
        measured = with_disk(patch, None)
        assert run_ingest(source, tmp_path / "measure").exit_code == 0
    fresh = tmp_path / "fresh"
    with monkeypatch.context() as patch:
        with_disk(patch, int(measured.used * fraction))
        result = run_ingest(source, fresh)
    assert_one_disk_full_line(result, fresh)
    assert snapshot(fresh) == dict.fromkeys(snapshot(fresh))  # no manifest, excluded, json
    assert run_ingest(source, fresh).exit_code == 0  # space freed: the re-run completes it
    check_complete(source, fresh, n_images)

    # an earlier complete run, then a new file and a full disk: the old outputs stay
    before = snapshot(fresh)
    write_us(source / "late" / "IM1", np.full((16, 16), 50, np.uint8), seed=77)
    with monkeypatch.context() as patch:
        measured = with_disk(patch, None)
        assert run_ingest(source, tmp_path / "measure").exit_code == 0
    with monkeypatch.context() as patch:
        with_disk(patch, int(measured.used * fraction))
        result = run_ingest(source, fresh)
    assert_one_disk_full_line(result, fresh)
    assert snapshot(fresh) == before
    assert run_ingest(source, fresh).exit_code == 0
    check_complete(source, fresh, n_images + 1)


def assert_one_disk_full_line(result: Any, out: Path) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: The disk is full: cannot write ")
    assert str(out) in lines[0]  # where
    assert "Traceback" not in result.output


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]
    if shutil.which("mount") is None or subprocess.run(command, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected test covers this")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_tmpfs_with_worker_processes(
    small_export: ExportSummary, tiny_disk: Path
) -> None:
    out = tiny_disk / "out"
    command = [sys.executable, "-m", "usdcm", "ingest", str(small_export.root), "--out", str(out)]
    command += ["--workers", "2", "-q"]
    full = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert full.returncode == 2, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "The disk is full" in lines[0] and str(out) in lines[0], lines
    assert not (out / "manifest.csv").exists()

    remount = ["mount", "-o", "remount,size=64m", str(tiny_disk)]
    subprocess.run(remount, check=True, capture_output=True)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    check_complete(small_export.root, out, len(small_export.image_paths))
