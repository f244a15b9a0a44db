"""The ingest pipeline: scan -> select -> convert -> label -> write, incremental and crash-safe.

Owns the output folder layout::

    DIR/manifest.csv       one row per SOP instance (see manifests/README.md)
    DIR/excluded.csv       every other file under SOURCE, with its reason
    DIR/ingest.json        counts by reason, label join counts, images cropped to their
                           ultrasound region and images without one, timings, versions
    DIR/images/*.nii.gz    one NIfTI per SOP instance (``*.nii`` with ``--compress none``)
    DIR/.usdcm/secret      the HMAC key behind every pseudonym (mode 0600, never printed)
    DIR/.usdcm/journal.jsonl  finished work, so re-runs convert only new or changed files
    DIR/.usdcm/run.sqlite  what the run in progress knows of each file (removed when it ends)

Every file under SOURCE ends up exactly once in ``manifest.csv`` or ``excluded.csv``.
Symbolic links to files are followed; links to folders, broken links and link loops are
listed in ``excluded.csv`` (code ``symlink``) and never followed; FIFOs and devices are
never opened. Files that could not be read are tried again on the next run.

A full disk (or any failed write of an output) stops the run with :class:`OutputWriteError`
and keeps what was finished: ``manifest.csv``, ``excluded.csv`` and ``ingest.json`` are
written to ``.usdcm/staging`` first and only then renamed into place, so they stay the
previous complete set (or absent) until a run ends, and the next run completes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from usdcm import __version__
from usdcm.artifacts.instance import InstanceHeader
from usdcm.artifacts.manifest import ManifestRow, write_excluded, write_manifest
from usdcm.atomic import atomic_write_text
from usdcm.dicom.sop import sop_class_name
from usdcm.errors import InvalidSourceError, OutputWriteError, UsdcmError
from usdcm.ingest.convert import (
    DECODE_BATCH_SIZE,
    Compression,
    ConvertTask,
    decode_crashed,
    decode_timed_out,
    on_disk,
    run_convert_task,
)
from usdcm.ingest.journal import Journal, Record
from usdcm.ingest.labels import LabelTable, read_labels
from usdcm.ingest.runstate import RunState, decode_path
from usdcm.ingest.scan import check_file, scan_headers, walk_files
from usdcm.ingest.select import DEFAULT_MAX_PIXEL_BYTES, SelectionOptions, select_instances
from usdcm.parallel import DaskCluster, map_files, open_scheduler
from usdcm.privacy import PathRedactor, ProjectSecret

STATE_DIR = ".usdcm"
IMAGES_DIR = "images"
STAGING_DIR = "staging"
CONVERT_VERSION = 3  # bump when the conversion changes, so re-runs redo the images
# 2: tolerant region reading (spacing kept for an off-by-one or negative delta; region_note)
# 3: gray levels of YBR_FULL(_422) are their Y samples, not the luminance of clipped RGB
RETRIED_CODES = frozenset({"unreadable"})
"""Exclusions that may be transient (a permission, a vanished file): never reused."""
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _write_error(err: OSError, out: Path) -> OutputWriteError:
    """The one-line message for a failed write under ``out``: what, where, and what to do."""
    where = err.filename or out
    then = (
        "then run `usdcm ingest` again: finished work is kept, and manifest.csv is left as it "
        "was until a run completes."
    )
    if err.errno in DISK_FULL_ERRNOS:
        message = (
            f"The disk is full: cannot write {where} ({os.strerror(err.errno)}). "
            f"Free space on the disk that holds {out}, {then}"
        )
    else:
        message = f"Cannot write {where} ({err.strerror or type(err).__name__}); fix it, {then}"
    return OutputWriteError(message)


class ProgressReporter(Protocol):
    """What the pipeline tells a progress display; the CLI implements it with rich."""

    def phase(self, name: str, total: int) -> None: ...

    def advance(self, count: int = 1) -> None: ...


class _NoProgress:
    def phase(self, name: str, total: int) -> None:
        return None

    def advance(self, count: int = 1) -> None:
        return None


@dataclass(frozen=True)
class IngestOptions:
    """How to ingest; every field has the default ``usdcm ingest`` uses."""

    labels: Path | None = None
    workers: int | None = None
    modalities: frozenset[str] = frozenset({"US"})
    keep_color: bool = False
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES
    secret_path: Path | None = None
    scheduler: str | None = None
    """Where the scan and the conversion run: ``None``/``"process"`` (this machine's
    process pool), ``"local"`` (a Dask LocalCluster of :meth:`worker_count` workers) or a
    Dask scheduler address, ``tcp://host:8786``. The outputs are the same whichever."""
    compress: Compression = Compression.FAST
    """How the images are compressed (:class:`~usdcm.ingest.convert.Compression`): ``fast``
    and ``best`` write ``.nii.gz``, ``none`` writes ``.nii``. A re-run with another choice
    converts the images again; one with the same choice keeps them."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "compress", Compression(self.compress))

    def worker_count(self) -> int:
        return self.workers if self.workers and self.workers > 0 else (os.cpu_count() or 1)


@dataclass(frozen=True)
class IngestResult:
    """Where the outputs are, and what happened."""

    out: Path
    n_files: int
    n_images: int
    n_excluded: int
    n_converted: int
    n_reused: int
    excluded_by_code: dict[str, int] = field(default_factory=dict)
    n_without_region: int = 0
    """Images without a 2D ultrasound region: their whole frame was kept, with any text
    burned into it."""

    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.csv"

    @property
    def excluded_path(self) -> Path:
        return self.out / "excluded.csv"


@contextlib.contextmanager
def _exclusive_lock(state: Path) -> Iterator[None]:
    state.mkdir(parents=True, exist_ok=True)
    with (state / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            message = f"Another `usdcm ingest` is writing to {state.parent}; wait for it to end."
            raise UsdcmError(message) from err
        yield


def _display(relative: str) -> str:
    """A path as it can be written to UTF-8 CSV, even if the file name is not UTF-8."""
    return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _versions() -> dict[str, str]:
    versions = {"usdcm": __version__}
    packages = ("pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "numpy", "isal")
    for package in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    versions["nibabel"] = metadata.version("nibabel")
    return versions


def _check_source(source: Path) -> None:
    if not source.exists():
        message = f"SOURCE {source} does not exist; give the folder your PACS export is in."
        raise InvalidSourceError(message)
    if not source.is_dir():
        message = f"SOURCE {source} is not a folder; give the folder that holds the export."
        raise InvalidSourceError(message)
    try:
        with os.scandir(source):
            pass
    except OSError as err:
        message = f"SOURCE {source} cannot be listed ({type(err).__name__}); check its permissions."
        raise InvalidSourceError(message) from err


class _Image(NamedTuple):
    """The geometry of a converted image, as its convert record gives it."""

    frames: int
    height: int
    width: int
    channels: int
    spacing_x_mm: float | None
    spacing_y_mm: float | None
    crop: str
    region_note: str


_Exclusion = tuple[str, str]
"""``(code, reason)`` of a file left out."""


@dataclass(slots=True)
class _Previous:
    """The newest journal record of one (type, key), read back when it may be reused."""

    size: Any
    mtime: Any
    opts: Any
    value: InstanceHeader | _Image | _Exclusion
    phi: tuple[str, ...]
    line: int
    join_key: str | None = None


class _File(NamedTuple):
    """One file under SOURCE as a phase reads it from the run's store: its place in walk
    order, its journal key, and the size and mtime its journal records carry."""

    n: int
    key: str
    size: int
    mtime_ns: int


STATE_FILE = "run.sqlite"
"""The run's per-file state in ``DIR/.usdcm`` (:mod:`usdcm.ingest.runstate`), removed when
the run ends."""
_SELECTED = "header IS NOT NULL AND code IS NULL"
"""The files selected for conversion and not excluded since (an SQL condition on the store)."""
_CONVERTED = f"{_SELECTED} AND image IS NOT NULL"
"""The files whose image is in the manifest."""


class _Run:
    """The state of one ingest run: secret, journal, and what each file became.

    What each file became is kept on disk, in the run's :class:`RunState`, and every
    phase streams it a chunk of files at a time, in walk order: memory does not grow with
    the number of files, only with the identifier words seen in their headers (a few per
    patient, for redacting paths) and with the labels file.
    """

    def __init__(
        self,
        source: Path,
        out: Path,
        options: IngestOptions,
        secret: ProjectSecret,
        state: RunState,
        labels: LabelTable | None = None,
    ):
        self.source = source
        self.out = out
        self.options = options
        self.secret = secret
        self.state = state
        self.labels = labels
        self.phi: set[str] = set()
        self.journal = Journal(out / STATE_DIR / "journal.jsonl")
        self.journal.load_index(self._index)
        self.has_previous = state.has_previous()
        self.timings: dict[str, float] = {}
        self.converted = 0
        self.reused = 0
        self.cluster: DaskCluster | None = None

    def _index(self, line: int, offset: int, entry: Record) -> None:
        """Index one record of the previous journal (a key that no file can have, such as
        one that is not text, is left out)."""
        with contextlib.suppress(UnicodeEncodeError):
            self.state.add_previous(str(entry["t"]), str(entry["k"]), line, offset)

    def path(self, relative: bytes) -> str:
        return os.path.join(self.source, decode_path(relative))

    def _previous(self, line: int, entry: Record) -> _Previous | None:
        """A journal record in the form a phase uses; ``None`` if it cannot be used (redone)."""
        value = entry.get("v")
        try:
            if not isinstance(value, dict):
                return None
            compact = (
                self._scanned(value)
                if entry["t"] == "scan"
                else self._converted(value)
                if entry["t"] == "convert"
                else None
            )
            phi = tuple(value.get("phi", ()))
            join_key = self._join_key(value) if entry["t"] == "scan" else None
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if compact is None:
            return None
        opts = entry.get("opts")
        return _Previous(entry.get("size"), entry.get("mtime"), opts, compact, phi, line, join_key)

    @staticmethod
    def _exclusion_of(value: Record) -> _Exclusion:
        return (str(value["code"]), str(value["reason"]))

    def _scanned(self, value: Record) -> InstanceHeader | _Exclusion:
        """The header of a scan record, or the file's exclusion."""
        if value.get("status") != "dicom":
            return self._exclusion_of(value)
        return InstanceHeader.from_record(value)

    def _join_key(self, value: Record) -> str | None:
        """The labels file's join hash in a scan record: the only one kept."""
        if self.labels is None or value.get("status") != "dicom":
            return None
        join_key = value.get("join", {}).get(self.labels.keyword)
        return None if join_key is None else str(join_key)

    def _converted(self, value: Record) -> _Image | _Exclusion:
        """The geometry of a convert record, or the file's exclusion."""
        if value.get("status") != "converted":
            return self._exclusion_of(value)
        return _Image(
            frames=value["frames"],
            height=value["height"],
            width=value["width"],
            channels=value["channels"],
            spacing_x_mm=value["spacing_x_mm"],
            spacing_y_mm=value["spacing_y_mm"],
            crop=value["crop"],
            region_note=value.get("region_note", ""),
        )

    def record(self, kind: str, item: _File, value: Record, **extra: Any) -> None:
        entry = {"t": kind, "k": item.key, "size": item.size, "mtime": item.mtime_ns, "v": value}
        entry.update(extra)
        self.journal.append(entry)

    def reuse(self, kind: str, item: _File, **extra: Any) -> _Previous | None:
        """The journal's newest record of ``(kind, item)`` if this run may use it."""
        where = self.state.previous(kind, item.key) if self.has_previous else None
        if where is None:
            return None
        line, offset = where
        raw = self.journal.read_at(offset)
        entry = None if raw is None else self._previous(line, raw)
        if entry is None or entry.size != item.size or entry.mtime != item.mtime_ns:
            return None
        if isinstance(entry.value, tuple) and entry.value[0] in RETRIED_CODES:
            return None
        if any(getattr(entry, name) != value for name, value in extra.items()):
            return None
        self.state.keep_line(entry.line)
        return entry

    def _store_scan(self, n: int, scan: InstanceHeader | _Exclusion, join_key: str | None) -> None:
        if isinstance(scan, InstanceHeader):
            sql = "UPDATE file SET header = ?, join_key = ? WHERE n = ?"
            self.state.update(sql, (_encode_header(scan), join_key, n))
        else:
            self.state.update("UPDATE file SET code = ?, reason = ? WHERE n = ?", (*scan, n))

    def scan(self, progress: ProgressReporter) -> None:
        """Step 1: header of every file, reusing the journal for unchanged files."""
        started = time.perf_counter()
        todo = self.state.pending(lambda row: self.path(row[1]), "relative, key, size, mtime")
        settled = 0
        for rows in self.state.files("relative, key"):
            for n, relative, key in rows:
                stat, problem = check_file(self.path(relative))
                if stat is None or problem is not None:
                    exclusion = self._exclusion_of(problem or {"code": "unreadable", "reason": ""})
                    self._store_scan(n, exclusion, None)
                    settled += 1
                    continue
                item = _File(n, key, stat.st_size, stat.st_mtime_ns)
                sql = "UPDATE file SET size = ?, mtime = ? WHERE n = ?"
                self.state.update(sql, (item.size, item.mtime_ns, n))
                reused = self.reuse("scan", item)
                if reused is not None and not isinstance(reused.value, _Image):
                    self._store_scan(n, reused.value, reused.join_key)
                    self.phi.update(reused.phi)
                    settled += 1
                else:
                    todo.add(n)
        progress.phase("scan headers", self.state.count())
        progress.advance(settled)
        results = scan_headers(
            todo, self.secret, workers=self.options.worker_count(), cluster=self.cluster
        )
        for path, record in results:
            n, _, key, size, mtime_ns = todo.done(path)
            item = _File(n, key, size, mtime_ns)
            self.record("scan", item, record)
            self._store_scan(item.n, self._scanned(record), self._join_key(record))
            self.phi.update(record.get("phi", ()))
            progress.advance()
        self.journal.sync()
        self.timings["scan_s"] = time.perf_counter() - started

    def redactor(self) -> PathRedactor:
        """A redactor for every identifier word seen in the headers of this export."""
        redactor = PathRedactor(self.secret)
        redactor.hashed = self.phi
        return redactor

    def select(self, redactor: PathRedactor) -> None:
        """Step 2: each file's display path, and which SOP instances to convert; the
        others get their exclusion."""
        options = SelectionOptions(self.options.modalities, self.options.max_pixel_bytes)
        seen = self.state.seen()
        for rows in self.state.files("relative, header, code, reason"):
            outcomes: list[tuple[str, InstanceHeader | _Exclusion]] = []
            for _, relative, header, code, reason in rows:
                display = _display(redactor.redact(decode_path(relative)))
                scan = (code, reason) if header is None else _header(header)
                outcomes.append((display, scan))
            decisions = select_instances(outcomes, options, seen=seen)
            self.state.executemany(
                "UPDATE file SET display = ?, code = ?, reason = ? WHERE n = ?",
                (
                    (display, *(why or (None, None)), row[0])
                    for row, (display, _), why in zip(rows, outcomes, decisions, strict=True)
                ),
            )

    def _store_converted(self, n: int, converted: _Image | _Exclusion) -> None:
        if isinstance(converted, _Image):
            image = json.dumps(converted, separators=(",", ":"))
            self.state.update("UPDATE file SET image = ? WHERE n = ?", (image, n))
        else:
            sql = "UPDATE file SET code = ?, reason = ?, stage = 1 WHERE n = ?"
            self.state.update(sql, (*converted, n))

    def _convert_task(self, row: list[Any]) -> ConvertTask:
        """The conversion of the file of a store row ``[n, relative, header, ...]``."""
        header = _header(row[2])
        # who makes each image durable (see ConvertTask): a Dask worker itself (this process
        # may not share its page cache); else on_disk, in threads, while the next decode
        fsync = self.cluster is not None
        write = fsync or self.options.worker_count() > 1
        return ConvertTask(
            self.path(row[1]),
            self.image_path(header),
            self.options.keep_color,
            header.frame_time_ms,
            self.options.compress,
            fsync,
            write,
        )

    def convert(self, progress: ProgressReporter) -> None:
        """Step 3: decode, crop and write each selected instance; reuse unchanged ones.

        Stores each selected file's image geometry, or the exclusion of one that failed.
        """
        started = time.perf_counter()
        compress = self.options.compress
        fingerprint = f"v{CONVERT_VERSION}-color{int(self.options.keep_color)}"
        if compress is not Compression.FAST:  # the default keeps the fingerprint it had
            fingerprint += f"-{compress.value}"
        todo = self.state.pending(self._convert_task, "relative, header, key, size, mtime")
        selected = 0
        for rows in self.state.files("header, key, size, mtime", _SELECTED):
            for n, header, key, size, mtime_ns in rows:
                selected += 1
                item = _File(n, key, size, mtime_ns)
                reused = self.reuse("convert", item, opts=fingerprint)
                if reused is not None and not isinstance(reused.value, InstanceHeader):
                    image_path = self.image_path(_header(header))
                    if not isinstance(reused.value, _Image) or os.path.exists(image_path):
                        self._store_converted(n, reused.value)
                        self.reused += 1
                        continue
                    self.state.keep_line(reused.line, keep=False)
                todo.add(n)
        progress.phase("convert images", selected)
        progress.advance(selected - len(todo))
        results = map_files(
            run_convert_task,
            todo,
            workers=self.options.worker_count(),
            batch_size=DECODE_BATCH_SIZE,
            on_crash=decode_crashed,
            on_timeout=decode_timed_out,
            cluster=self.cluster,
        )
        for task, record in on_disk(results):
            if record.get("status") == "write_failed":  # never journaled: redone next run
                failure = OSError(record["errno"], record["error"], record["path"])
                raise _write_error(failure, self.out)
            n, _, _, key, size, mtime_ns = todo.done(task)
            item = _File(n, key, size, mtime_ns)
            self.record("convert", item, record, opts=fingerprint)
            self._store_converted(n, self._converted(record))
            self.converted += 1
            progress.advance()
        self.journal.sync()
        self.timings["convert_s"] = time.perf_counter() - started

    def image_id(self, header: InstanceHeader) -> str:
        return self.secret.pseudonym(header.sop_instance_uid, namespace="image")

    def image_name(self, header: InstanceHeader) -> str:
        """The file name of an instance's image: its pseudonym and the compression's suffix."""
        return f"{self.image_id(header)}{self.options.compress.suffix}"

    def image_path(self, header: InstanceHeader) -> str:
        return os.path.join(self.out, IMAGES_DIR, self.image_name(header))

    def rows(self, counts: Counter[str]) -> Iterator[ManifestRow]:
        """The manifest rows, in display-path order, made one at a time with their labels
        joined; counts the rows without a label (``unlabelled``) and those cropped to a
        region (``cropped``), and marks each image to keep."""
        for size, header, join_key, display, image in self.state.ordered(
            f"SELECT size, header, join_key, display, image FROM file WHERE {_CONVERTED} "
            "ORDER BY display, n"
        ):
            scan, converted = _header(header), _Image(*json.loads(image))
            label = self.labels.lookup_key(join_key) if self.labels is not None else None
            counts["unlabelled"] += label is None
            counts["cropped"] += bool(converted.crop)
            image_id = self.image_id(scan)
            image_name = f"{image_id}{self.options.compress.suffix}"
            self.state.keep_image(image_name)
            yield ManifestRow(
                image_id=image_id,
                image_path=f"{IMAGES_DIR}/{image_name}",
                patient_key=scan.patient_key,
                study_key=self.secret.pseudonym(scan.study_instance_uid, namespace="study"),
                series_key=self.secret.pseudonym(scan.series_instance_uid, namespace="series"),
                study_uid=scan.study_instance_uid,
                series_uid=scan.series_instance_uid,
                sop_uid=scan.sop_instance_uid,
                label=label or "",
                frames=converted.frames,
                height=converted.height,
                width=converted.width,
                channels=converted.channels,
                spacing_x_mm=converted.spacing_x_mm,
                spacing_y_mm=converted.spacing_y_mm,
                crop=converted.crop,
                region_note=converted.region_note,
                manufacturer=scan.manufacturer,
                model=scan.model,
                modality=scan.modality,
                sop_class=sop_class_name(scan.sop_class_uid),
                photometric=scan.photometric,
                transfer_syntax=scan.transfer_syntax_uid,
                frame_time_ms=scan.frame_time_ms,
                source_path=display,
                source_size=size,
                sex=scan.sex,
                age_band=scan.age_band,
                study_year=scan.study_year,
            )

    def exclusions(self, by_code: Counter[str]) -> Iterator[dict[str, str]]:
        """The rows of ``excluded.csv`` in display-path order (for one path: left out at
        selection before at conversion, then walk order), counted by code in ``by_code``."""
        for display, code, reason in self.state.ordered(
            "SELECT display, code, reason FROM file WHERE code IS NOT NULL "
            "ORDER BY display, stage, n"
        ):
            by_code[code] += 1
            yield {"path": display, "code": code, "reason": reason}


_HEADER_FIELDS = tuple(field.name for field in dataclasses.fields(InstanceHeader))


def _encode_header(header: InstanceHeader) -> str:
    """A header as the run's store keeps it: its fields' values, in order, as JSON."""
    return json.dumps([getattr(header, name) for name in _HEADER_FIELDS], separators=(",", ":"))


def _header(encoded: str) -> InstanceHeader:
    """The header of a file from :func:`_encode_header`."""
    return InstanceHeader(*json.loads(encoded))


def _prune_images(images: Path, keep: Callable[[str], bool]) -> int:
    """Remove images (and temp files of killed runs) that no manifest row refers to."""
    removed = 0
    if not images.is_dir():
        return removed
    for path in images.iterdir():
        if not keep(path.name):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _state_error(err: sqlite3.Error, path: Path) -> OSError | None:
    """The :class:`OSError` of a failed write to the run's store (SQLite reports a full
    disk as ``SQLITE_FULL``), or ``None`` for any other error."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is None:
        return None
    if code & 0xFF == sqlite3.SQLITE_FULL:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    if code & 0xFF in _STATE_WRITE_ERRORS:
        return OSError(errno.EIO, getattr(err, "sqlite_errorname", str(err)), str(path))
    return None


_STATE_WRITE_ERRORS = frozenset(
    {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM}
)


def ingest(
    source: Path,
    out: Path,
    options: IngestOptions | None = None,
    progress: ProgressReporter | None = None,
) -> IngestResult:
    """Ingest the export under ``source`` into ``out``; see the module docstring.

    Raises ``InvalidSourceError`` for a missing or empty ``source`` and ``LabelsError`` for
    an unusable labels file, before any work. Bad files never raise: they are excluded.
    Raises ``OutputWriteError`` when an output cannot be written (a full disk): the outputs
    of the previous run stay as they were, and the next run goes on from the journal.
    Raises ``SchedulerError`` (one line) when ``options.scheduler`` names a Dask cluster
    that cannot be reached, whose workers cannot see ``source`` and ``out``, or that is
    lost during the run (finished work is kept for the next run).
    """
    options = options or IngestOptions()
    progress = progress or _NoProgress()
    source, out = source.resolve(), out.resolve()
    _check_source(source)
    try:
        with (
            _exclusive_lock(out / STATE_DIR),
            open_scheduler(
                options.scheduler, workers=options.worker_count(), readable=[source], writable=[out]
            ) as cluster,
            RunState(out / STATE_DIR / STATE_FILE) as state,
        ):
            return _ingest_locked(source, out, options, progress, state, cluster)
    except OSError as err:
        under_out = err.filename is not None and Path(str(err.filename)).is_relative_to(out)
        if err.errno in DISK_FULL_ERRNOS or under_out:
            raise _write_error(err, out) from err
        raise
    except sqlite3.Error as err:
        failure = _state_error(err, out / STATE_DIR / STATE_FILE)
        if failure is None:
            raise
        raise _write_error(failure, out) from err


def _ingest_locked(
    source: Path,
    out: Path,
    options: IngestOptions,
    progress: ProgressReporter,
    state: RunState,
    cluster: DaskCluster | None = None,
) -> IngestResult:
    """The work of :func:`ingest`, under the output folder's lock, with the run's ``state``,
    on ``cluster`` if any (else the process pool)."""
    secret = ProjectSecret.load_or_create(options.secret_path or out / STATE_DIR / "secret")
    labels = read_labels(options.labels, secret) if options.labels else None
    started = time.perf_counter()
    skip = out if out.is_relative_to(source) else None
    n_files = state.add_files(
        (relative, secret.pseudonym(relative, namespace="path"))
        for relative in walk_files(source, skip=skip)
    )
    if not n_files:
        message = f"SOURCE {source} holds no files; check the path of the export."
        raise InvalidSourceError(message)
    run = _Run(source, out, options, secret, state, labels)
    run.timings["walk_s"] = time.perf_counter() - started
    run.cluster = cluster
    try:
        run.scan(progress)
        run.select(run.redactor())
        run.convert(progress)
    finally:
        run.journal.close()

    staging = out / STATE_DIR / STAGING_DIR
    state.index_display()
    counts: Counter[str] = Counter()
    n_images = write_manifest(staging / "manifest.csv", run.rows(counts))
    by_code: Counter[str] = Counter()
    n_excluded = write_excluded(staging / "excluded.csv", run.exclusions(by_code))
    n_cropped = counts["cropped"]
    run.timings["total_s"] = time.perf_counter() - started
    summary = {
        "usdcm_version": __version__,
        "secret_fingerprint": secret.pseudonym("fingerprint", namespace="secret"),  # same key?
        "n_files": n_files,
        "n_images": n_images,
        "n_excluded": n_excluded,
        "excluded_by_code": dict(sorted(by_code.items())),
        "n_converted": run.converted,
        "n_reused": run.reused,
        "n_cropped": n_cropped,
        "n_without_region": n_images - n_cropped,
        "output_folder_skipped": skip is not None,
        "labels": (
            labels.summary(counts["unlabelled"])
            if labels
            else {"unlabelled_images": counts["unlabelled"]}
        ),
        "options": {
            "workers": options.worker_count(),
            "modalities": sorted(options.modalities),
            "keep_color": options.keep_color,
            "max_pixel_bytes": options.max_pixel_bytes,
            "compress": options.compress.value,
        },
        "timings_s": {name: round(value, 3) for name, value in run.timings.items()},
        "versions": _versions(),
    }
    atomic_write_text(staging / "ingest.json", json.dumps(summary, indent=2) + "\n")
    run.journal.compact(state.kept_lines())
    # nothing below needs disk space: renames, then removals
    for name in ("excluded.csv", "ingest.json", "manifest.csv"):  # the manifest last
        os.replace(staging / name, out / name)
    _prune_images(out / IMAGES_DIR, state.keeps_image)
    return IngestResult(
        out=out,
        n_files=n_files,
        n_images=n_images,
        n_excluded=n_excluded,
        n_converted=run.converted,
        n_reused=run.reused,
        excluded_by_code=dict(sorted(by_code.items())),
        n_without_region=n_images - n_cropped,
    )
