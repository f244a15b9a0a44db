"""The ingest pipeline: scan -> select -> convert -> label -> write, incremental and crash-safe.

Owns the output folder layout::

    DIR/manifest.csv       one row per SOP instance (see manifests/README.md)
    DIR/excluded.csv       every other file under SOURCE, with its reason
    DIR/ingest.json        counts by reason, label join counts, images cropped to their
                           ultrasound region and images without one, timings, versions
    DIR/images/*.nii.gz    one NIfTI per SOP instance (``*.nii`` with ``--compress none``)
    DIR/.usdcm/secret      the HMAC key behind every pseudonym (mode 0600, never printed)
    DIR/.usdcm/journal.jsonl  finished work, so re-runs convert only new or changed files

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
import errno
import fcntl
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
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
from usdcm.ingest.scan import check_file, scan_headers, walk_files
from usdcm.ingest.select import DEFAULT_MAX_PIXEL_BYTES, SelectionOptions, select_instances
from usdcm.parallel import DaskCluster, map_files, open_scheduler
from usdcm.privacy import PathRedactor, ProjectSecret

STATE_DIR = ".usdcm"
IMAGES_DIR = "images"
STAGING_DIR = "staging"
CONVERT_VERSION = 2  # bump when the conversion changes, so re-runs redo the images
# 2: tolerant region reading (spacing kept for an off-by-one or negative delta; region_note)
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
    """The newest journal record of one (type, key), kept compact until it is reused."""

    size: Any
    mtime: Any
    opts: Any
    value: InstanceHeader | _Image | _Exclusion
    phi: tuple[str, ...]
    line: int
    join_key: str | None = None


@dataclass(slots=True)
class _SourceFile:
    """One file under SOURCE, as this run sees it."""

    relative: str
    key: str
    size: int = -1
    mtime_ns: int = -1
    scan: InstanceHeader | _Exclusion = ("unreadable", "")
    display: str = ""
    converted: _Image | _Exclusion | None = None
    join_key: str | None = None  # the labels file's join hash of this instance


class _Run:
    """The state of one ingest run: secret, journal, and what each file became.

    Memory grows with the export only by one compact :class:`_SourceFile` per file: scan
    and convert records go to the journal and are kept here in compact form only, and the
    manifest rows are made while ``manifest.csv`` is written.
    """

    def __init__(
        self,
        source: Path,
        out: Path,
        options: IngestOptions,
        secret: ProjectSecret,
        labels: LabelTable | None = None,
    ):
        self.source = source
        self.out = out
        self.options = options
        self.secret = secret
        self.labels = labels
        self._strings: dict[Any, Any] = {}
        self._images: dict[tuple[_Image, type, type], _Image] = {}
        self.phi: set[str] = set()
        self.journal = Journal(out / STATE_DIR / "journal.jsonl")
        self.previous = self.journal.load_compact(self._previous)
        self.kept_lines: set[int] = set()  # journal lines of the records reused
        self.timings: dict[str, float] = {}
        self.converted = 0
        self.reused = 0
        self.cluster: DaskCluster | None = None

    def share(self, value: Any) -> Any:
        """``value`` (a string or a tuple of strings), shared with equal earlier values."""
        return self._strings.setdefault(value, value)

    def path(self, item: _SourceFile) -> str:
        return os.path.join(self.source, item.relative)

    def _previous(self, line: int, entry: Record) -> _Previous | None:
        """A journal record in compact form; ``None`` if it cannot be used (redone)."""
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
            phi = self.share(tuple(value.get("phi", ())))
            join_key = self._join_key(value) if entry["t"] == "scan" else None
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if compact is None:
            return None
        opts = entry.get("opts")
        return _Previous(entry.get("size"), entry.get("mtime"), opts, compact, phi, line, join_key)

    def _exclusion_of(self, value: Record) -> _Exclusion:
        return self.share((str(value["code"]), str(value["reason"])))  # type: ignore[no-any-return]

    def _scanned(self, value: Record) -> InstanceHeader | _Exclusion:
        """The header of a scan record (strings repeated across a series shared), or the
        file's exclusion."""
        if value.get("status") != "dicom":
            return self._exclusion_of(value)
        return InstanceHeader.from_record(value, self.share)

    def _join_key(self, value: Record) -> str | None:
        """The labels file's join hash in a scan record: the only one kept in memory."""
        if self.labels is None or value.get("status") != "dicom":
            return None
        join_key = value.get("join", {}).get(self.labels.keyword)
        return None if join_key is None else str(join_key)

    def _converted(self, value: Record) -> _Image | _Exclusion:
        """The compact form of a convert record; equal geometries are shared."""
        if value.get("status") != "converted":
            return self._exclusion_of(value)
        image = _Image(
            frames=value["frames"],
            height=value["height"],
            width=value["width"],
            channels=value["channels"],
            spacing_x_mm=value["spacing_x_mm"],
            spacing_y_mm=value["spacing_y_mm"],
            crop=self.share(value["crop"]),
            region_note=self.share(value.get("region_note", "")),
        )
        key = (image, type(image.spacing_x_mm), type(image.spacing_y_mm))
        return self._images.setdefault(key, image)

    def record(self, kind: str, item: _SourceFile, value: Record, **extra: Any) -> None:
        entry = {"t": kind, "k": item.key, "size": item.size, "mtime": item.mtime_ns, "v": value}
        entry.update(extra)
        self.journal.append(entry)

    def reuse(self, kind: str, item: _SourceFile, **extra: Any) -> _Previous | None:
        entry = self.previous.pop((kind, item.key), None)
        if entry is None or entry.size != item.size or entry.mtime != item.mtime_ns:
            return None
        if isinstance(entry.value, tuple) and entry.value[0] in RETRIED_CODES:
            return None
        if any(getattr(entry, name) != value for name, value in extra.items()):
            return None
        self.kept_lines.add(entry.line)
        return entry

    def scan(self, files: list[_SourceFile], progress: ProgressReporter) -> None:
        """Step 1: header of every file, reusing the journal for unchanged files."""
        started = time.perf_counter()
        todo: dict[str, _SourceFile] = {}
        for item in files:
            stat, problem = check_file(self.path(item))
            if stat is None or problem is not None:
                item.scan = self._exclusion_of(problem or {"code": "unreadable", "reason": ""})
                continue
            item.size, item.mtime_ns = stat.st_size, stat.st_mtime_ns
            reused = self.reuse("scan", item)
            if reused is not None and not isinstance(reused.value, _Image):
                item.scan, item.join_key = reused.value, reused.join_key
                self.phi.update(reused.phi)
            else:
                todo[self.path(item)] = item
        # the scan records of files gone from the export are not needed any more
        self.previous = {key: entry for key, entry in self.previous.items() if key[0] != "scan"}
        progress.phase("scan headers", len(files))
        progress.advance(len(files) - len(todo))
        results = scan_headers(
            list(todo), self.secret, workers=self.options.worker_count(), cluster=self.cluster
        )
        for path, record in results:
            item = todo.pop(path)
            self.record("scan", item, record)
            item.scan, item.join_key = self._scanned(record), self._join_key(record)
            self.phi.update(record.get("phi", ()))
            progress.advance()
        self.journal.sync()
        self.timings["scan_s"] = time.perf_counter() - started

    def redactor(self, files: list[_SourceFile]) -> PathRedactor:
        """A redactor for every identifier word seen in the headers of this export."""
        redactor = PathRedactor(self.secret)
        redactor.hashed = self.phi
        for item in files:
            display = _display(redactor.redact(item.relative))
            item.display = item.relative if display == item.relative else display
        return redactor

    def select(
        self, files: list[_SourceFile]
    ) -> tuple[list[_SourceFile], list[tuple[str, str, str]]]:
        """Step 2: the SOP instances to convert, and exclusions ``(path, code, reason)``."""
        options = SelectionOptions(self.options.modalities, self.options.max_pixel_bytes)
        decisions = select_instances(
            ((item.display, item.scan) for item in files),
            options,
        )
        selected: list[_SourceFile] = []
        exclusions: list[tuple[str, str, str]] = []
        for item, why in zip(files, decisions, strict=True):
            if why is None:
                selected.append(item)
            else:
                exclusions.append((item.display, *why))
        return selected, exclusions

    def convert(
        self, selected: list[_SourceFile], progress: ProgressReporter
    ) -> list[tuple[str, str, str]]:
        """Step 3: decode, crop and write each selected instance; reuse unchanged ones.

        Sets ``converted`` on every selected file; returns the exclusions of those that
        failed, ``(path, code, reason)``.
        """
        started = time.perf_counter()
        compress = self.options.compress
        # who makes each image durable (see ConvertTask): a Dask worker itself (this process
        # may not share its page cache); else on_disk, in threads, while the next decode
        fsync = self.cluster is not None
        write = fsync or self.options.worker_count() > 1
        fingerprint = f"v{CONVERT_VERSION}-color{int(self.options.keep_color)}"
        if compress is not Compression.FAST:  # the default keeps the fingerprint it had
            fingerprint += f"-{compress.value}"
        todo: dict[str, _SourceFile] = {}
        tasks: list[ConvertTask] = []
        for item in selected:
            image_path = self.image_path(item)
            reused = self.reuse("convert", item, opts=fingerprint)
            if reused is not None and not isinstance(reused.value, InstanceHeader):
                if not isinstance(reused.value, _Image) or os.path.exists(image_path):
                    item.converted = reused.value
                    self.reused += 1
                    continue
                self.kept_lines.discard(reused.line)
            assert isinstance(item.scan, InstanceHeader)
            frame_time = item.scan.frame_time_ms
            source = self.path(item)
            tasks.append(
                ConvertTask(
                    source, image_path, self.options.keep_color, frame_time, compress, fsync, write
                )
            )
            todo[source] = item
        self.previous = {}
        progress.phase("convert images", len(selected))
        progress.advance(len(selected) - len(tasks))
        results = map_files(
            run_convert_task,
            tasks,
            workers=self.options.worker_count(),
            batch_size=DECODE_BATCH_SIZE,
            on_crash=decode_crashed,
            on_timeout=decode_timed_out,
            cluster=self.cluster,
        )
        del tasks
        for task, record in on_disk(results):
            if record.get("status") == "write_failed":  # never journaled: redone next run
                failure = OSError(record["errno"], record["error"], record["path"])
                raise _write_error(failure, self.out)
            item = todo.pop(task.source)
            self.record("convert", item, record, opts=fingerprint)
            item.converted = self._converted(record)
            self.converted += 1
            progress.advance()
        self.journal.sync()
        exclusions = [
            (item.display, *item.converted)
            for item in selected
            if isinstance(item.converted, tuple) and not isinstance(item.converted, _Image)
        ]
        self.timings["convert_s"] = time.perf_counter() - started
        return exclusions

    def image_id(self, item: _SourceFile) -> str:
        assert isinstance(item.scan, InstanceHeader)
        return self.secret.pseudonym(item.scan.sop_instance_uid, namespace="image")

    def image_name(self, item: _SourceFile) -> str:
        """The file name of ``item``'s image: its pseudonym and the compression's suffix."""
        return f"{self.image_id(item)}{self.options.compress.suffix}"

    def image_path(self, item: _SourceFile) -> str:
        return os.path.join(self.out, IMAGES_DIR, self.image_name(item))

    def rows(self, images: list[_SourceFile], unlabelled: list[int]) -> Iterator[ManifestRow]:
        """The manifest rows of ``images``, made one at a time, with their labels joined;
        counts the rows without a label in ``unlabelled[0]``."""
        for item in images:
            scan, converted = item.scan, item.converted
            assert isinstance(scan, InstanceHeader) and isinstance(converted, _Image)
            label = self.labels.lookup_key(item.join_key) if self.labels is not None else None
            unlabelled[0] += label is None
            image_id = self.image_id(item)
            yield ManifestRow(
                image_id=image_id,
                image_path=f"{IMAGES_DIR}/{image_id}{self.options.compress.suffix}",
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
                source_path=item.display,
                source_size=item.size,
                sex=scan.sex,
                age_band=scan.age_band,
                study_year=scan.study_year,
            )


def _prune_images(images: Path, keep: set[str]) -> int:
    """Remove images (and temp files of killed runs) that no manifest row refers to."""
    removed = 0
    if not images.is_dir():
        return removed
    for path in images.iterdir():
        if path.name not in keep:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


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
        ):
            return _ingest_locked(source, out, options, progress, cluster)
    except OSError as err:
        under_out = err.filename is not None and Path(str(err.filename)).is_relative_to(out)
        if err.errno in DISK_FULL_ERRNOS or under_out:
            raise _write_error(err, out) from err
        raise


def _ingest_locked(
    source: Path,
    out: Path,
    options: IngestOptions,
    progress: ProgressReporter,
    cluster: DaskCluster | None = None,
) -> IngestResult:
    """The work of :func:`ingest`, under the output folder's lock, on ``cluster`` if any
    (else the process pool)."""
    secret = ProjectSecret.load_or_create(options.secret_path or out / STATE_DIR / "secret")
    labels = read_labels(options.labels, secret) if options.labels else None
    started = time.perf_counter()
    skip = out if out.is_relative_to(source) else None
    files = [
        _SourceFile(relative, secret.pseudonym(relative, namespace="path"))
        for path in walk_files(source, skip=skip)
        for relative in [path.relative_to(source).as_posix()]
    ]
    if not files:
        message = f"SOURCE {source} holds no files; check the path of the export."
        raise InvalidSourceError(message)
    run = _Run(source, out, options, secret, labels)
    run.timings["walk_s"] = time.perf_counter() - started
    run.cluster = cluster
    try:
        run.scan(files, progress)
        run.redactor(files)
        selected, exclusions = run.select(files)
        exclusions.extend(run.convert(selected, progress))
    finally:
        run.journal.close()
    images = [item for item in selected if isinstance(item.converted, _Image)]
    del selected
    images.sort(key=lambda item: item.display)
    exclusions.sort(key=lambda exclusion: exclusion[0])

    staging = out / STATE_DIR / STAGING_DIR
    unlabelled = [0]
    write_manifest(staging / "manifest.csv", run.rows(images, unlabelled))
    write_excluded(
        staging / "excluded.csv",
        ({"path": path, "code": code, "reason": reason} for path, code, reason in exclusions),
    )
    by_code = dict(sorted(Counter(code for _, code, _ in exclusions).items()))
    n_cropped = sum(
        1 for item in images if isinstance(item.converted, _Image) and item.converted.crop
    )
    run.timings["total_s"] = time.perf_counter() - started
    summary = {
        "usdcm_version": __version__,
        "secret_fingerprint": secret.pseudonym("fingerprint", namespace="secret"),  # same key?
        "n_files": len(files),
        "n_images": len(images),
        "n_excluded": len(exclusions),
        "excluded_by_code": by_code,
        "n_converted": run.converted,
        "n_reused": run.reused,
        "n_cropped": n_cropped,
        "n_without_region": len(images) - n_cropped,
        "output_folder_skipped": skip is not None,
        "labels": (
            labels.summary(unlabelled[0]) if labels else {"unlabelled_images": unlabelled[0]}
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
    run.journal.compact(run.kept_lines)
    # nothing below needs disk space: renames, then removals
    for name in ("excluded.csv", "ingest.json", "manifest.csv"):  # the manifest last
        os.replace(staging / name, out / name)
    _prune_images(out / IMAGES_DIR, {run.image_name(item) for item in images})
    return IngestResult(
        out=out,
        n_files=len(files),
        n_images=len(images),
        n_excluded=len(exclusions),
        n_converted=run.converted,
        n_reused=run.reused,
        excluded_by_code=by_code,
        n_without_region=len(images) - n_cropped,
    )
