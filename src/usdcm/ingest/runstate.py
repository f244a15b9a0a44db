"""The per-file state of one ingest run, kept on disk so that memory does not grow with it.

Owns ``DIR/.usdcm/run.sqlite``: what the run knows of each file under SOURCE (its path,
size, header, display path, why it is left out, its image's geometry), the index of the
previous run's journal, the SOP instances selected so far and the names of the images to
keep. The ingest pipeline streams every phase through it in walk order, a chunk of files
at a time, so a run holds a bounded number of files in memory whatever the size of the
export. It is scratch, not a record: the journal (:mod:`usdcm.ingest.journal`) is what
makes a run incremental and crash-safe. A run starts it afresh and removes it when it
ends; one left by a killed run is replaced by the next.

Never reads DICOM, never decides: selection stays :func:`usdcm.ingest.select.select_instances`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Container, Iterable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")
CHUNK = 2048
"""Files read from the store at a time: the most a run holds in memory for one phase."""

_SCHEMA = """
CREATE TABLE file (
    n INTEGER PRIMARY KEY,           -- walk order
    relative BLOB NOT NULL,          -- path under SOURCE, surrogate-escaped UTF-8
    key TEXT NOT NULL,               -- the journal's key of the file
    size INTEGER NOT NULL DEFAULT -1,
    mtime INTEGER NOT NULL DEFAULT -1,
    header TEXT,                     -- InstanceHeader.to_record() as JSON, for DICOM
    join_key TEXT,                   -- the labels file's join hash of the instance
    display TEXT,                    -- the path as outputs show it (redacted, UTF-8)
    code TEXT,                       -- why it is left out; NULL while it is kept
    reason TEXT,
    stage INTEGER NOT NULL DEFAULT 0, -- where it was left out: 0 scan/selection, 1 conversion
    image TEXT                       -- the converted image's geometry as JSON
);
CREATE TABLE previous (             -- the newest record of each (type, key) in the journal
    t TEXT NOT NULL, k TEXT NOT NULL, line INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (t, k)
) WITHOUT ROWID;
CREATE TABLE kept (line INTEGER PRIMARY KEY);       -- journal lines reused by this run
CREATE TABLE seen (uid TEXT PRIMARY KEY, display TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE todo (i INTEGER PRIMARY KEY, n INTEGER NOT NULL);  -- the files of a pool map
CREATE TABLE keep (name TEXT PRIMARY KEY) WITHOUT ROWID;        -- images named by the manifest
"""


def encode_path(relative: str) -> bytes:
    """A relative path as bytes, even one with undecodable (surrogate-escaped) names."""
    return relative.encode("utf-8", "surrogateescape")


def decode_path(raw: bytes) -> str:
    """The inverse of :func:`encode_path`."""
    return raw.decode("utf-8", "surrogateescape")


class RunState:
    """The store of one run (see the module docstring); a thin layer over SQLite.

    Writes are not synced: a run killed mid-way leaves a store the next run discards.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writes: dict[str, list[Sequence[Any]]] = {}
        self._buffered = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in (path, path.with_name(path.name + "-journal")):
            stale.unlink(missing_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("PRAGMA locking_mode = EXCLUSIVE")
        self._db.executescript(_SCHEMA)
        self._db.execute("BEGIN")

    def close(self) -> None:
        """Close the store and remove its file."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunState:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        self.flush()
        return self._db.execute(sql, parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.flush()
        self._db.executemany(sql, rows)

    def update(self, sql: str, parameters: Sequence[Any]) -> None:
        """Run ``sql`` (an ``UPDATE`` of one file's columns) soon: writes are batched, and
        every read of the store runs those pending first. Updates of one file must set
        different columns, or be queued in the order they are to apply."""
        self._writes.setdefault(sql, []).append(parameters)
        self._buffered += 1
        if self._buffered >= CHUNK:
            self.flush()

    def flush(self) -> None:
        """Run the pending :meth:`update` calls."""
        if self._buffered:
            writes, self._writes, self._buffered = self._writes, {}, 0
            for sql, rows in writes.items():
                self._db.executemany(sql, rows)

    def count(self, where: str = "1") -> int:
        """How many files satisfy ``where`` (an SQL condition on ``file``)."""
        self.flush()
        value: int = self._db.execute(f"SELECT count(*) FROM file WHERE {where}").fetchone()[0]
        return value

    def add_files(self, files: Iterable[tuple[str, str]]) -> int:
        """Add ``(relative path, key)`` of every file, in walk order; returns how many."""
        rows = ((encode_path(relative), key) for relative, key in files)
        self._db.executemany("INSERT INTO file (relative, key) VALUES (?, ?)", rows)
        return self.count()

    def files(self, columns: str, where: str = "1") -> Iterator[list[Any]]:
        """``n`` and ``columns`` of the files satisfying ``where``, in walk order, a list
        of at most :data:`CHUNK` rows at a time (the caller may update the rows it got)."""
        sql = f"SELECT n, {columns} FROM file WHERE n > ? AND ({where}) ORDER BY n LIMIT ?"
        last = -1
        while True:
            self.flush()
            rows = self._db.execute(sql, (last, CHUNK)).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def ordered(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The rows of ``sql``, streamed (the rows read must not change meanwhile)."""
        self.flush()
        cursor = self._db.execute(sql)
        while rows := cursor.fetchmany(CHUNK):
            yield from rows

    # the previous journal ---------------------------------------------------------------

    def add_previous(self, kind: str, key: str, line: int, offset: int) -> None:
        """Index the journal record of ``(kind, key)`` at ``line`` (later ones replace it)."""
        self._db.execute(
            "INSERT OR REPLACE INTO previous VALUES (?, ?, ?, ?)", (kind, key, line, offset)
        )

    def has_previous(self) -> bool:
        self.flush()
        return self._db.execute("SELECT 1 FROM previous LIMIT 1").fetchone() is not None

    def previous(self, kind: str, key: str) -> tuple[int, int] | None:
        """``(line, byte offset)`` of the newest journal record of ``(kind, key)``."""
        self.flush()
        row = self._db.execute(
            "SELECT line, offset FROM previous WHERE t = ? AND k = ?", (kind, key)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def keep_line(self, line: int, keep: bool = True) -> None:
        """Mark a journal line as reused by this run (or no longer, ``keep=False``)."""
        self.flush()
        if keep:
            self._db.execute("INSERT OR IGNORE INTO kept VALUES (?)", (line,))
        else:
            self._db.execute("DELETE FROM kept WHERE line = ?", (line,))

    def kept_lines(self) -> KeptLines:
        """The journal lines marked by :meth:`keep_line`, for :meth:`Journal.compact`."""
        self.flush()
        return KeptLines(self._db)

    def index_display(self) -> None:
        """Index the files by display path, once every display path is set: the outputs
        are read in that order."""
        self._db.execute("CREATE INDEX IF NOT EXISTS file_display ON file (display, n)")

    # the images to keep ---------------------------------------------------------------

    def keep_image(self, name: str) -> None:
        """Mark an image as named by the manifest (batched, as :meth:`update`)."""
        self.update("INSERT OR IGNORE INTO keep VALUES (?)", (name,))

    def keeps_image(self, name: str) -> bool:
        self.flush()
        return self._db.execute("SELECT 1 FROM keep WHERE name = ?", (name,)).fetchone() is not None

    def seen(self) -> SeenInstances:
        """The SOP instances selected so far, for :class:`~usdcm.ingest.select.InstanceSelector`."""
        self.flush()
        return SeenInstances(self._db)

    def pending(self, make: Callable[[list[Any]], T], columns: str) -> Pending[T]:
        """An empty :class:`Pending` over this store (``make`` builds an item from ``n``
        and ``columns`` of a file)."""
        self.execute("DELETE FROM todo")
        return Pending(self, make, columns)


class KeptLines(Container[int]):
    """The journal lines reused by a run, on disk (``line in kept``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __contains__(self, line: object) -> bool:
        query = "SELECT 1 FROM kept WHERE line = ?"
        return self._db.execute(query, (line,)).fetchone() is not None


class SeenInstances(MutableMapping[str, str]):
    """SOPInstanceUID -> display path of its first file, on disk: the memory of
    :class:`~usdcm.ingest.select.InstanceSelector` for an export of any size."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __getitem__(self, uid: str) -> str:
        row = self._db.execute("SELECT display FROM seen WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            raise KeyError(uid)
        display: str = row[0]
        return display

    def setdefault(self, uid: str, display: str) -> str:
        """The display path of ``uid``'s first file, ``display`` if there was none (one
        statement when the instance is new, as most are)."""
        inserted = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (uid, display))
        return display if inserted.rowcount == 1 else self[uid]

    def __setitem__(self, uid: str, display: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO seen VALUES (?, ?)", (uid, display))

    def __delitem__(self, uid: str) -> None:
        if self._db.execute("DELETE FROM seen WHERE uid = ?", (uid,)).rowcount == 0:
            raise KeyError(uid)

    def __iter__(self) -> Iterator[str]:
        return (row[0] for row in self._db.execute("SELECT uid FROM seen ORDER BY uid"))

    def __len__(self) -> int:
        count: int = self._db.execute("SELECT count(*) FROM seen").fetchone()[0]
        return count


class Pending(Sequence[T], Generic[T]):
    """The items of one pool map (:func:`usdcm.parallel.map_files`), kept on disk until
    the pool takes them.

    :meth:`add` queues a file; the pool reads slices, and each item read is remembered
    (with the file's ``n`` and columns) until :meth:`done` is called with its result. So
    memory holds only the items in flight, whatever their number. Items must be hashable
    and distinct, and the columns they are made of must not change while the pool runs
    (they are read ahead).
    """

    def __init__(self, state: RunState, make: Callable[[list[Any]], T], columns: str) -> None:
        self._state = state
        self._make = make
        self._columns = columns
        self._count = 0
        self._in_flight: dict[Any, list[Any]] = {}
        self._ahead: list[tuple[Any, ...]] = []
        self._ahead_start = 0

    def add(self, n: int) -> None:
        """Queue file ``n``."""
        self._state.update("INSERT INTO todo VALUES (?, ?)", (self._count, n))
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def _read(self, start: int, stop: int) -> list[T]:
        """Items ``start`` to ``stop``, read from the store :data:`CHUNK` at a time: the
        pool asks for a few at a time, in order."""
        end = self._ahead_start + len(self._ahead)
        if not (self._ahead_start <= start and stop <= end):
            self._ahead_start = start
            self._ahead = self._state.execute(
                f"SELECT file.n, {self._columns} FROM todo JOIN file ON file.n = todo.n "
                "WHERE todo.i >= ? AND todo.i < ? ORDER BY todo.i",
                (start, max(stop, start + CHUNK)),
            ).fetchall()
        items = []
        for values in self._ahead[start - self._ahead_start : stop - self._ahead_start]:
            row = list(values)
            item = self._make(row)
            self._in_flight[item] = row
            items.append(item)
        return items

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._read(start, stop)
        position = index + self._count if index < 0 else index
        if not 0 <= position < self._count:
            raise IndexError(index)
        return self._read(position, position + 1)[0]

    def __iter__(self) -> Iterator[T]:
        for start in range(0, self._count, CHUNK):
            yield from self._read(start, start + CHUNK)

    def done(self, item: T) -> list[Any]:
        """``n`` and the columns of the file of ``item``, once its result has come;
        forgets it."""
        return self._in_flight.pop(item)
