"""The ingest journal: an append-only JSON-lines record of finished work in ``DIR/.usdcm``.

It makes ingest incremental (unchanged files are not read again) and crash-safe (a run
killed with ``kill -9`` loses at most the images still being written, which are journaled
only once they are on disk). Records are keyed by an HMAC of
the source path and hold no patient identifier. A torn last line is ignored on load.

Memory stays flat: :meth:`Journal.load_index` hands each record to the caller to index
(ingest keeps the index on disk) and :meth:`Journal.read_at` reads one back by its offset;
:meth:`Journal.compact` rewrites the file by streaming it, never holding it.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Container, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from usdcm.atomic import atomic_open

Record = dict[str, Any]
T = TypeVar("T")


class Journal:
    """Append records one line at a time; load the newest record per (type, key)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._old_lines: int | None = None  # complete lines before this run's appends
        self._reader: BinaryIO | None = None

    def _lines(self) -> Iterator[tuple[int, int, bytes]]:
        """Every complete line with its index and byte offset; a torn last line (no
        newline) is left out."""
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            offset = 0
            for index, raw in enumerate(handle):
                if not raw.endswith(b"\n"):
                    break  # torn write from a killed run
                yield index, offset, raw
                offset += len(raw)

    @staticmethod
    def _parse(raw: bytes) -> Record | None:
        try:
            record = json.loads(raw)
        except ValueError:
            return None
        if isinstance(record, dict) and "t" in record and "k" in record:
            return record
        return None

    def load(self) -> dict[tuple[str, str], Record]:
        """Read every complete record; later records replace earlier ones."""
        return self.load_compact(lambda _index, record: record)

    def load_compact(self, compact: Callable[[int, Record], T]) -> dict[tuple[str, str], T]:
        """Like :meth:`load`, keeping ``compact(line_index, record)`` of each newest record.

        The line index is what :meth:`compact` takes to keep a record that is still needed.
        """
        records: dict[tuple[str, str], T] = {}

        def keep(index: int, _offset: int, record: Record) -> None:
            records[(str(record["t"]), str(record["k"]))] = compact(index, record)

        self.load_index(keep)
        return records

    def load_index(self, visit: Callable[[int, int, Record], None]) -> None:
        """Call ``visit(line_index, byte_offset, record)`` for every complete record, oldest
        first, holding none of them: for the same (type, key), the last call is the newest.

        :meth:`read_at` reads a record back by its offset; the line index is what
        :meth:`compact` takes to keep a record that is still needed.
        """
        count = 0
        for index, offset, raw in self._lines():
            count = index + 1
            record = self._parse(raw)
            if record is not None:
                visit(index, offset, record)
        self._old_lines = count

    def read_at(self, offset: int) -> Record | None:
        """The record of the line at ``offset`` (from :meth:`load_index`), or ``None`` if
        that line is not a record."""
        if self._reader is None:
            self._reader = self.path.open("rb")
        self._reader.seek(offset)
        raw = self._reader.readline()
        return self._parse(raw) if raw.endswith(b"\n") else None

    def append(self, record: Record) -> None:
        """Append one record with a single ``write`` on an ``O_APPEND`` descriptor."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._ensure_line_start()
        data = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)
        except OSError as err:
            err.filename = str(self.path)
            raise
        if written != len(data):  # a short write to a regular file: the disk is full
            message = f"only {written} of {len(data)} bytes of a journal record were written"
            raise OSError(errno.ENOSPC, message, str(self.path))

    def _ensure_line_start(self) -> None:
        """After a torn write, start on a fresh line so the next record parses."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with self.path.open("rb") as handle:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                os.write(self._fd, b"\n")
                if self._old_lines is not None:
                    self._old_lines += 1  # the torn line is complete now, and still old

    def sync(self) -> None:
        """Flush appended records to disk."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Flush and close; the descriptor is closed even if the flush fails."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def rewrite(self, records: Iterable[Record]) -> None:
        """Replace the journal atomically with ``records`` (compaction after a full run)."""
        self.close()
        with atomic_open(self.path) as handle:
            for record in records:
                handle.write(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")

    def compact(self, kept_old_lines: Container[int]) -> None:
        """Replace the journal atomically with every record appended since
        :meth:`load_index` (or :meth:`load_compact`) and the older lines ``kept_old_lines``
        (the records reused).

        Streams the file: the records are never all in memory. Each (type, key) must be
        appended at most once per run, and only when its older record was not reused, so
        that the result holds exactly one record per (type, key) still in use.
        """
        assert self._old_lines is not None, "load_compact() must run first"
        old = self._old_lines
        self.close()
        with atomic_open(self.path) as handle:
            for index, _offset, raw in self._lines():
                if index >= old or index in kept_old_lines:  # this run's lines are records
                    handle.write(raw.decode("utf-8"))
