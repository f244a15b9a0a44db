"""Tests for usdcm.ingest.runstate: the run's per-file state on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import usdcm.ingest.runstate as runstate
from usdcm.errors import OutputWriteError
from usdcm.ingest import IngestOptions, ingest
from usdcm.ingest.runstate import RunState, decode_path, encode_path
from usdcm.synth import ExportSummary


def test_files_come_back_in_walk_order_a_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runstate, "CHUNK", 3)
    names = [f"f{index}" for index in range(8)] + ["odd\udcff"]  # a name that is not UTF-8
    with RunState(tmp_path / "run.sqlite") as state:
        assert state.add_files((name, f"k{index}") for index, name in enumerate(names)) == 9
        chunks = list(state.files("relative, key"))
        assert [len(chunk) for chunk in chunks] == [3, 3, 3]
        rows = [row for chunk in chunks for row in chunk]
        assert [decode_path(relative) for _, relative, _ in rows] == names
        assert encode_path(names[-1]) == b"odd\xff"
        # rows updated while they are read are not read again
        seen = [n for chunk in state.files("key", "code IS NULL") for n, _ in chunk]
        assert seen == [n for n, _, _ in rows]


def test_pending_items_are_read_ahead_and_forgotten_once_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runstate, "CHUNK", 4)
    with RunState(tmp_path / "run.sqlite") as state:
        state.add_files((f"f{index}", f"k{index}") for index in range(10))
        pending = state.pending(lambda row: f"/src/{decode_path(row[1])}", "relative, key")
        for n in (2, 4, 6, 8, 10):
            pending.add(n)
        assert len(pending) == 5
        assert pending[0:2] == ["/src/f1", "/src/f3"]
        assert pending[2:5] == ["/src/f5", "/src/f7", "/src/f9"]
        assert pending[-1] == "/src/f9"
        assert pending.done("/src/f3")[0] == 4  # n, then the columns
        assert pending.done("/src/f9") == [10, b"f9", "k9"]
        with pytest.raises(KeyError):
            pending.done("/src/f3")
        assert list(pending) == ["/src/f1", "/src/f3", "/src/f5", "/src/f7", "/src/f9"]


def test_seen_instances_and_kept_lines_live_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "state" / "run.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"left by a killed run")  # replaced, not read
    with RunState(path) as state:
        seen = state.seen()
        assert seen.setdefault("1.1", "a") == "a"
        assert seen.setdefault("1.1", "b") == "a"
        assert dict(seen) == {"1.1": "a"} and len(seen) == 1
        del seen["1.1"]
        assert "1.1" not in seen
        state.keep_line(3)
        state.keep_line(5)
        state.keep_line(5, keep=False)
        kept = state.kept_lines()
        assert 3 in kept and 5 not in kept
    assert not path.exists()  # removed when the run ends


def test_a_full_disk_under_the_run_state_is_one_clear_error_and_the_rerun_completes(
    synth_export: ExportSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "export"
    shutil.copytree(synth_export.root, source, symlinks=True)
    out = tmp_path / "out"
    original = RunState.__init__

    def small_disk(self: RunState, path: Path) -> None:
        original(self, path)
        self.execute("PRAGMA max_page_count = 9")  # 7 when empty; past it, SQLITE_FULL

    with monkeypatch.context() as patch:
        patch.setattr(RunState, "__init__", small_disk)
        with pytest.raises(OutputWriteError, match="The disk is full: cannot write") as failure:
            ingest(source, out, IngestOptions(workers=1))
    assert "run.sqlite" in str(failure.value) and str(out) in str(failure.value)
    assert not (out / "manifest.csv").exists()
    assert not (out / ".usdcm" / "run.sqlite").exists()
    result = ingest(source, out, IngestOptions(workers=1))
    assert result.n_images == len(synth_export.image_paths)
