"""The outbox's format (usdcm.network.outbox): an entry is a file with its reason; keeping a
file copies it, never over another file of the same name; attempts add up over sends; an
entry leaves only once sent, and a file that is not an entry is never removed; a kept copy and
its reason are synced, file and folder, before keep returns."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from usdcm.network.outbox import entries, is_entry, keep, leave, read_reason, reason_path


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_keep_copies_and_adds_up_attempts(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    source = _file(tmp_path / "a" / "x.dcm", b"first")
    kept = keep(source, outbox, destination="P@h:1", reason="refused", attempts=3)
    assert kept == outbox / "x.dcm" and kept.read_bytes() == b"first" and source.exists()
    again = keep(source, outbox, destination="Q@h:2", reason="aborted", attempts=2, tls=True)
    assert again == kept and entries(outbox) == [kept]
    reason = read_reason(kept)
    assert reason is not None
    assert (reason.attempts, reason.destination, reason.reason, reason.tls) == (
        5,
        "Q@h:2",
        "aborted",
        True,
    )
    # an entry kept again in place (a resend from the outbox) keeps its first failure time
    first = reason.first_failed_at
    keep(kept, outbox, destination="Q@h:2", reason="still", attempts=1)
    assert read_reason(kept).attempts == 6  # type: ignore[union-attr]
    assert read_reason(kept).first_failed_at == first  # type: ignore[union-attr]


def test_a_name_taken_by_other_bytes_is_not_overwritten(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    one = keep(
        _file(tmp_path / "a" / "IM1", b"one"), outbox, destination="P@h:1", reason="r", attempts=1
    )
    two = keep(
        _file(tmp_path / "b" / "IM1", b"two"), outbox, destination="P@h:1", reason="r", attempts=1
    )
    assert one != two and {one.read_bytes(), two.read_bytes()} == {b"one", b"two"}
    assert sorted(entries(outbox)) == sorted([one, two])


def test_leave_removes_entries_only(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    source = _file(tmp_path / "a" / "x.dcm", b"bytes")
    kept = keep(source, outbox, destination="P@h:1", reason="r", attempts=1)
    other = _file(tmp_path / "b" / "x.dcm", b"other bytes")
    assert not leave(other, outbox) and is_entry(kept)  # another file of that name
    assert leave(source, outbox)  # the same file, sent from elsewhere, clears its entry
    assert not kept.exists() and not reason_path(kept).exists() and source.exists()
    plain = _file(outbox / "plain.dcm", b"no reason")
    assert not leave(plain, outbox) and plain.exists()  # not an entry: not the outbox's


def test_reasons_from_before_attempts_were_counted_still_read(tmp_path: Path) -> None:
    entry = _file(tmp_path / "outbox" / "x.dcm", b"x")
    old = {"file": "x.dcm", "destination": "P@h:1", "reason": "r", "failed_at": "2024-01-01"}
    reason_path(entry).write_text(json.dumps(old))
    reason = read_reason(entry)
    assert reason is not None and reason.attempts == 1 and reason.first_failed_at == "2024-01-01"
    reason_path(entry).write_text("{not json")
    assert read_reason(entry) is None and is_entry(entry)
    orphan = tmp_path / "outbox" / ("gone.dcm" + ".reason.json")
    orphan.write_text(json.dumps(old))
    assert entries(tmp_path / "outbox") == [entry]


def test_keep_syncs_the_copy_its_reason_and_the_outbox_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = tmp_path / "outbox"
    source = _file(tmp_path / "a" / "x.sr.dcm", os.urandom(70_000))
    synced: list[tuple[bool, int]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        synced.append((stat.S_ISDIR(info.st_mode), info.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    kept = keep(source, outbox, destination="P@h:1", reason="refused", attempts=1)
    assert kept.read_bytes() == source.read_bytes()
    folder = (True, outbox.stat().st_ino)
    copy, reason = (False, kept.stat().st_ino), (False, reason_path(kept).stat().st_ino)
    # the copy's data, its name, the reason's data, the reason's name: in that order
    assert synced == [copy, folder, reason, folder]
    assert sorted(os.listdir(outbox)) == ["x.sr.dcm", "x.sr.dcm.reason.json"]


def test_a_copy_that_fails_leaves_no_entry_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = tmp_path / "outbox"
    source = _file(tmp_path / "a" / "x.sr.dcm", b"sr bytes")

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error") as caught:
        keep(source, outbox, destination="P@h:1", reason="refused", attempts=1)
    assert caught.value.filename == str(outbox / "x.sr.dcm")
    assert os.listdir(outbox) == [] and entries(outbox) == []
    assert source.read_bytes() == b"sr bytes"
