"""The ingest journal: an append-only JSON-lines record of finished work in ``DIR/.usdcm``.

It makes ingest incremental (unchanged files are not read again) and crash-safe (a run
killed with ``kill -9`` loses at most the file in flight). Records are keyed by an HMAC of
the source path and hold no patient identifier. A torn last line is ignored on load.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from usdcm.atomic import atomic_open

Record = dict[str, Any]


class Journal:
    """Append records one line at a time; load the newest record per (type, key)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def load(self) -> dict[tuple[str, str], Record]:
        """Read every complete record; later records replace earlier ones."""
        records: dict[tuple[str, str], Record] = {}
        if not self.path.exists():
            return records
        with self.path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # torn write from a killed run
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict) and "t" in record and "k" in record:
                    records[(str(record["t"]), str(record["k"]))] = record
        return records

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

    def sync(self) -> None:
        """Flush appended records to disk."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Flush and close; the descriptor is closed even if the flush fails."""
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
