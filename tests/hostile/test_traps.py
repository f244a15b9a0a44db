"""Traps in the export tree: ingest finishes and accounts for every entry exactly once.

The tree holds a folder symlink loop, file symlink loops, a broken link, a FIFO (opening it
would block forever, even for root), a file nobody may read, a folder nobody may list, file
names that are not valid UTF-8 and a folder of 10,000 files.

Policy under test (see ``usdcm.ingest.scan``): symbolic links to files are followed (a
second path to one instance is a ``duplicate``); links to folders are listed with code
``symlink`` and never followed, so a loop cannot recurse; broken links and link loops are
``symlink`` too; FIFOs, sockets and devices are never opened.

Unreadable files: the tests run as root (here and in CI), and ``chmod 000`` does not stop
root. So the always-on test injects the failure the kernel would give a normal user:
``PermissionError(EACCES)`` from opening that one path (``Path.open``), or from listing
that one folder (``os.scandir``); ``workers=1`` keeps the scan in this process. A second
test uses a real ``chmod 000`` file and folder and runs only when not root.
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.ingest.conftest import write_us
from usdcm.ingest import IngestOptions, IngestResult, ingest
from usdcm.synth import ExportSummary, write_export

BAD_NAME = b"caf\xe9-latin1"  # not UTF-8
BAD_IMAGE_NAME = b"IM\xff\xfe-moved"
N_JUNK = 10_000
N_REAL_IN_BIG = 3


def display(relative: bytes) -> str:
    """How ingest writes a path that may not be UTF-8 (backslash escapes)."""
    return relative.decode("utf-8", "backslashreplace")


def expected_entries(root: Path, blocked: frozenset[Path] = frozenset()) -> list[str]:
    """Every entry ingest must account for: files, links of any kind, unlistable folders."""
    base = os.fsencode(root)
    entries: list[str] = []
    for folder, dirs, files in os.walk(base, followlinks=False):
        linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        stopped = [d for d in dirs if Path(os.fsdecode(os.path.join(folder, d))) in blocked]
        dirs[:] = [d for d in dirs if d not in linked and d not in stopped]
        for name in [*files, *linked, *stopped]:
            entries.append(display(os.path.relpath(os.path.join(folder, name), base)))
    return entries


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def accounted(out: Path) -> tuple[Counter[str], dict[str, tuple[str, str]]]:
    """Each source path's count over both CSVs, and (code, reason) of every exclusion."""
    manifest = [row["source_path"] for row in read_csv(out / "manifest.csv")]
    excluded = read_csv(out / "excluded.csv")
    counts = Counter([*manifest, *(row["path"] for row in excluded)])
    return counts, {row["path"]: (row["code"], row["reason"]) for row in excluded}


def build_trap_tree(root: Path) -> dict[str, Any]:
    """A small synthetic export plus every trap; returns what the test needs to know."""
    summary: ExportSummary = write_export(root, patients=2, seed=3)
    base = os.fsencode(root)
    moved = summary.image_paths[0]
    moved_to = os.path.join(os.fsencode(moved.parent), BAD_IMAGE_NAME)
    os.rename(moved, moved_to)
    with open(os.path.join(base, BAD_NAME), "wb") as handle:
        handle.write(b"junk with a Latin-1 name\n")

    (root / "loop").symlink_to(".", target_is_directory=True)  # folder loop
    (root / "up").symlink_to("..", target_is_directory=True)  # leaves the tree
    (root / "ping").symlink_to("pong")  # file loop
    (root / "pong").symlink_to("ping")
    (root / "self").symlink_to("self")
    (root / "dangling").symlink_to("no-such-file")
    linked_image = summary.image_paths[1]
    (root / "alias").symlink_to(linked_image)  # followed: a duplicate of the real one
    os.mkfifo(root / "fifo")

    locked = root / "locked"
    locked.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    sealed = root / "sealed"
    write_us(sealed / "inner", np.zeros((8, 8), np.uint8), seed=900)

    big = root / "big"
    big.mkdir()
    for index in range(N_JUNK):
        (big / f"junk{index:05d}").write_bytes(b"x")
    for index in range(N_REAL_IN_BIG):
        write_us(big / f"real{index}", np.full((8, 8), 10 * index, np.uint8), seed=index)
    return {
        "summary": summary,
        "moved": display(os.path.relpath(moved_to, base)),
        "linked": linked_image.relative_to(root).as_posix(),
        "locked": locked,
        "sealed": sealed,
    }


@pytest.fixture
def deny(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Make opening a file, or listing a folder, fail with EACCES as for a normal user."""
    denied: set[Path] = set()
    real_open = Path.open
    real_scandir = os.scandir

    def fake_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self in denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)

    def fake_scandir(path: Any = ".") -> Any:
        if isinstance(path, str | os.PathLike) and Path(os.fsdecode(path)) in denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(Path, "open", fake_open)
    monkeypatch.setattr(os, "scandir", fake_scandir)
    return denied.add


def check_run(result: IngestResult, out: Path, tree: dict[str, Any], root: Path) -> None:
    counts, reasons = accounted(out)
    expected = expected_entries(root, frozenset({tree["sealed"]}))
    assert len(expected) == len(set(expected)) == result.n_files
    twice = {path: n for path, n in counts.items() if n != 1}
    assert not twice, f"accounted for more than once: {twice}"
    assert sorted(counts) == sorted(expected), "some entries are missing or invented"

    assert reasons["loop"][0] == "symlink" and "not followed" in reasons["loop"][1]
    assert reasons["up"][0] == "symlink"
    for name in ("ping", "pong", "self"):
        assert reasons[name] == ("symlink", reasons[name][1]) and "loop" in reasons[name][1]
    assert reasons["dangling"][0] == "symlink" and "broken" in reasons["dangling"][1]
    # the link is followed: the link and its target are one instance, kept once
    pair = {"alias", tree["linked"]}
    duplicate = pair & set(reasons)
    assert len(duplicate) == 1 and reasons[min(duplicate)][0] == "duplicate"
    assert min(pair - duplicate) in reasons[min(duplicate)][1]
    assert reasons["fifo"] == ("unreadable", "not a regular file (FIFO); not read")
    assert reasons["locked"][0] == "unreadable" and "PermissionError" in reasons["locked"][1]
    assert reasons["sealed"][0] == "unreadable" and "cannot be listed" in reasons["sealed"][1]
    assert reasons[display(BAD_NAME)][0] == "not_dicom"

    rows = read_csv(out / "manifest.csv")
    sources = {row["source_path"] for row in rows}
    assert tree["moved"] in sources  # a real image under a non-UTF-8 name is kept
    assert {f"big/real{index}" for index in range(N_REAL_IN_BIG)} <= sources
    assert len(rows) == len(tree["summary"].image_paths) + N_REAL_IN_BIG
    assert result.excluded_by_code["not_dicom"] >= N_JUNK


@pytest.fixture(scope="module")
def trap_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("traps") / "export"
    tree = build_trap_tree(root)
    yield root, tree
    shutil.rmtree(root.parent, ignore_errors=True)


def test_ingest_survives_every_trap_and_accounts_for_each_entry_once(
    trap_tree: tuple[Path, dict[str, Any]], tmp_path: Path, deny: Callable[[Path], None]
) -> None:
    root, tree = trap_tree
    deny(tree["locked"])
    deny(tree["sealed"])
    out = tmp_path / "out"
    started = time.monotonic()
    result = ingest(root, out, IngestOptions(workers=1))
    elapsed = time.monotonic() - started
    # ~1 s on 2 cores; a walk or select that is quadratic in 10,000 files would take minutes
    assert elapsed < 60, f"ingest of {result.n_files} files took {elapsed:.0f} s"
    check_run(result, out, tree, root)


def test_a_rerun_converts_nothing_again_and_retries_what_was_unreadable(
    trap_tree: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    deny: Callable[[Path], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, tree = trap_tree
    out = tmp_path / "out"
    for path in (tree["locked"], tree["sealed"], root / "big" / "real0"):
        deny(path)
    first = ingest(root, out, IngestOptions(workers=1))
    monkeypatch.undo()
    _, reasons = accounted(out)
    assert reasons["big/real0"][0] == "unreadable"

    # the permission is fixed: the unreadable file and folder are read; nothing is converted twice
    second = ingest(root, out, IngestOptions(workers=2))
    counts, reasons = accounted(out)
    assert "big/real0" not in reasons and counts["big/real0"] == 1
    assert "sealed" not in reasons, reasons.get("sealed")
    assert counts["sealed/inner"] == 1
    assert second.n_images == first.n_images + 2
    decode_errors = first.excluded_by_code.get("decode_error", 0)  # also journaled, reused
    assert second.n_converted == 2 and second.n_reused == first.n_images + decode_errors
    assert sorted(counts) == sorted(expected_entries(root))
    assert all(n == 1 for n in counts.values())


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file; see the injected test")
def test_real_permissions_as_a_normal_user(tmp_path: Path) -> None:  # pragma: no cover - not root
    root = tmp_path / "export"
    write_export(root, patients=1, seed=5)
    locked = root / "locked"
    locked.write_bytes(b"secret")
    sealed = root / "sealed"
    write_us(sealed / "inner", np.zeros((8, 8), np.uint8), seed=901)
    locked.chmod(0)
    sealed.chmod(0)
    try:
        ingest(root, tmp_path / "out", IngestOptions(workers=2))
    finally:
        sealed.chmod(0o755)
        locked.chmod(0o644)
    _, reasons = accounted(tmp_path / "out")
    assert reasons["locked"] == ("unreadable", "cannot read file (PermissionError)")
    assert reasons["sealed"][0] == "unreadable" and "cannot be listed" in reasons["sealed"][1]
