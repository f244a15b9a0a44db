"""usdcm.atomic's copy: the target gets the source's bytes through a synced temp file
renamed over it, then the folder is synced; a copy that fails leaves the old target and no
temp file, and its error names the target."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from usdcm.atomic import atomic_copy, atomic_write_bytes, sync_folder

SyncLog = list[tuple[bool, int]]


def record_fsync(monkeypatch: pytest.MonkeyPatch) -> SyncLog:
    """Record (is a folder, inode) for every ``os.fsync``, then sync for real."""
    calls: SyncLog = []
    real = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        calls.append((stat.S_ISDIR(info.st_mode), info.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def fail_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_the_copy_has_the_same_bytes_and_leaves_no_temp_file(tmp_path: Path) -> None:
    data = os.urandom(300_000)  # several of copyfileobj's chunks
    source = _file(tmp_path / "in" / "x.dcm", data)
    target = _file(tmp_path / "out" / "x.dcm", b"an older copy")
    atomic_copy(source, target)
    assert target.read_bytes() == data and source.read_bytes() == data
    assert os.listdir(target.parent) == ["x.dcm"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_the_file_then_its_folder_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _file(tmp_path / "in" / "x.dcm", b"bytes")
    target = tmp_path / "out" / "x.dcm"
    calls = record_fsync(monkeypatch)
    atomic_copy(source, target)
    # the temp file keeps its inode through the rename: the synced file is the target
    assert calls == [(False, target.stat().st_ino), (True, target.parent.stat().st_ino)]


def test_the_other_writers_sync_the_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "y.bin"
    calls = record_fsync(monkeypatch)
    atomic_write_bytes(target, b"data")
    assert calls == [(False, target.stat().st_ino)]


def test_a_failed_sync_keeps_the_old_target_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _file(tmp_path / "in" / "x.dcm", b"new bytes")
    target = _file(tmp_path / "out" / "x.dcm", b"old bytes")
    fail_fsync(monkeypatch)
    with pytest.raises(OSError, match="Input/output error") as caught:
        atomic_copy(source, target)
    assert caught.value.filename == str(target)
    assert target.read_bytes() == b"old bytes"
    assert os.listdir(target.parent) == ["x.dcm"]


def test_a_missing_source_names_the_source_and_touches_nothing(tmp_path: Path) -> None:
    source = tmp_path / "in" / "gone.dcm"
    target = _file(tmp_path / "out" / "x.dcm", b"old bytes")
    with pytest.raises(FileNotFoundError) as caught:
        atomic_copy(source, target)
    assert caught.value.filename == str(source)
    assert target.read_bytes() == b"old bytes"
    assert os.listdir(target.parent) == ["x.dcm"]


def test_sync_folder_names_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no such folder"
    with pytest.raises(FileNotFoundError) as caught:
        sync_folder(missing)
    assert caught.value.filename == str(missing)
