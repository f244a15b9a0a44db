"""Atomic file writes: a temp file in the same folder, fsync, then rename.

Owns the only way usdcm writes a file that matters; never decides what to write. A write
that fails (a full disk, a read-only folder) leaves the old file in place, removes its temp
file and raises ``OSError`` with ``filename`` set to the file it was writing.
"""

from __future__ import annotations

import contextlib
import os
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


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically, with permissions ``mode``.

    With ``fsync=False`` the data may still be in the page cache when this returns: a
    reader never sees a partial file, but after a power loss the file may be empty. The
    caller then makes it durable with :func:`sync_file` before it relies on it.
    """
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _failed(err, path)
        raise


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
