"""Atomic file writes: a temp file in the same folder, fsync, then rename.

Owns the only way usdcm writes a file that matters; never decides what to write. A write
that fails (a full disk, a read-only folder) leaves the old file in place, removes its temp
file and raises ``OSError`` with ``filename`` set to the file it was writing.

Only :func:`atomic_copy` also syncs the folder after the rename, so that the new name
survives a power loss; :func:`atomic_open` and :func:`atomic_write_bytes` sync the file's
data, not its name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _failed(err: BaseException, path: Path) -> None:
    """Name ``path``, not the temp file's random name, in a failed write's ``OSError``."""
    if isinstance(err, OSError) and (
        err.filename is None or str(err.filename).startswith(str(path.parent))
    ):
        err.filename = str(path)


@contextlib.contextmanager
def atomic_open(
    path: Path, mode: str = "w", *, encoding: str | None = "utf-8"
) -> Iterator[IO[str]]:
    """Open a temp file beside ``path`` for writing text; rename it over ``path`` on success.

    If the block raises, or the process dies, ``path`` is left as it was and the temp file
    is removed (or, after a kill, left with a ``.tmp`` suffix that readers ignore).
    """
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode, encoding=encoding, newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _failed(err, path)
        raise


@contextlib.contextmanager
def _binary_temp(
    path: Path, *, mode: int, fsync: bool, sync_name: bool = False
) -> Iterator[IO[bytes]]:
    """A binary temp file beside ``path``, renamed over it (with permissions ``mode``) when
    the block succeeds; with ``sync_name`` the folder is synced after the rename."""
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = ""  # renamed: nothing left to remove
        if sync_name:
            sync_folder(path.parent)
    except BaseException as err:
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _failed(err, path)
        raise


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically, with permissions ``mode``.

    With ``fsync=False`` the data may still be in the page cache when this returns: a
    reader never sees a partial file, but after a power loss the file may be empty. The
    caller then makes it durable with :func:`sync_file` before it relies on it.
    """
    with _binary_temp(path, mode=mode, fsync=fsync) as handle:
        handle.write(data)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy ``source``'s bytes to ``target`` atomically and durably, with permissions 0o644.

    The bytes go to a temp file beside ``target``, which is synced, renamed over ``target``,
    and then the folder is synced: once this returns, ``target`` holds the whole copy even
    after a power loss. A copy that fails leaves no temp file and ``target`` as it was (unless
    only the folder's sync failed, after the rename); its ``OSError`` names ``target``, or
    ``source`` when ``source`` cannot be opened.

    Examples
    --------
    ``atomic_copy(Path("out/x.sr.dcm"), Path("outbox/x.sr.dcm"))`` keeps a copy of an SR
    whose send failed; ``out/x.sr.dcm`` is left where it was.
    """
    with (
        source.open("rb") as reader,
        _binary_temp(target, mode=0o644, fsync=True, sync_name=True) as writer,
    ):
        shutil.copyfileobj(reader, writer)


def sync_file(path: Path) -> None:
    """Flush ``path``'s data (written by any process) to disk; raises ``OSError`` naming it."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        err.filename = str(path)
        raise


def sync_folder(path: Path) -> None:
    """Flush the folder ``path``'s entries (a name renamed or created in it) to disk; raises
    ``OSError`` naming it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        err.filename = str(path)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
