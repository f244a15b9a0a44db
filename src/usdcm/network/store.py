"""The export store that ``usdcm listen`` (and ``usdcm pull``) write into, and the study tracker.

Owns the layout ``EXPORT_DIR/<study>/<series>/<sop>.dcm``, where each name is a keyed hash
(HMAC under the store's secret, ``EXPORT_DIR/.usdcm/secret``), so a directory listing carries
no UID. The study and image names are the pseudonyms ``usdcm ingest`` calls ``study_key`` and
``image_id`` under the same secret. The same layout under ``EXPORT_DIR/.usdcm/other``
(:meth:`ExportStore.aside`) holds instances of storage classes nobody asked for, which
``usdcm ingest`` never reads. Files are written as received, never decoded, and are complete
and on disk (``fsync`` of the file and of its folders) before a store call returns: a caller
acknowledges an instance only after that. The same SOP instance arriving again never
overwrites the first: the first is kept and the duplicate recorded in
``EXPORT_DIR/.usdcm/duplicates.jsonl`` (keyed hashes only).

The :class:`StudyTracker` groups instances into studies across associations and says when a
study has been quiet long enough to be taken as complete; its pending set, with the failed
attempts of each study's work, survives a restart or a kill in
``EXPORT_DIR/.usdcm/pending.json``. A study whose work failed is due again after a backoff;
one that failed on every attempt leaves the pending set for ``EXPORT_DIR/.usdcm/failed.jsonl``
(keyed hashes only). Never touches the network, never logs a UID.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import errno
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from usdcm.atomic import atomic_write_text, sync_file, sync_folder
from usdcm.errors import StoreError
from usdcm.privacy import ProjectSecret

STATE_DIR = ".usdcm"
INCOMING_DIR = "incoming"
"""Where partly received data sets are spooled; emptied at every start."""
OTHER_DIR = "other"
"""Under the state folder: instances of storage classes not asked for, set aside."""
DUPLICATES_FILE = "duplicates.jsonl"
PENDING_FILE = "pending.json"
FAILED_FILE = "failed.jsonl"
PENDING_SCHEMA_VERSION = 2
"""pending.json: 1 held the keys only; 2 adds the failed attempts of each (1 is still read)."""
FAILED_SCHEMA_VERSION = 1
MAX_BACKOFF_S = 600.0
"""The longest wait before a failed study's work is tried again."""
SUFFIX = ".dcm"
COPY_CHUNK_BYTES = 1 << 20
STALE_TEMP_S = 600.0
"""A temp file beside the instances older than this is a killed writer's, not a live one's."""


class Outcome(StrEnum):
    """What a store call did with an instance."""

    STORED = "stored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class InstanceKeys:
    """The keyed hashes that name one instance's study, series and file."""

    study: str
    series: str
    image: str


@dataclass(frozen=True)
class Stored:
    """The result of storing one instance: where it is and whether it was new."""

    outcome: Outcome
    path: Path
    keys: InstanceKeys
    n_bytes: int


class ExportStore:
    """``EXPORT_DIR`` as a store of received instances, named by keyed hashes.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     store = ExportStore(Path(folder), ProjectSecret(b"k" * 32))
    ...     uids = {"study_uid": "1.2", "series_uid": "1.2.3", "sop_uid": "1.2.3.4"}
    ...     first = store.write_bytes(b"data", **uids)
    ...     again = store.write_bytes(b"other", **uids)
    ...     (first.outcome.value, again.outcome.value, first.path.read_bytes(),
    ...      "1.2" in str(first.path.relative_to(folder)))
    ('stored', 'duplicate', b'data', False)
    """

    def __init__(self, root: Path, secret: ProjectSecret | None = None) -> None:
        self.root = root
        self.tree = root
        """Where this store's instances go: ``root``, or the set-aside tree (:meth:`aside`)."""
        self.state = root / STATE_DIR
        try:
            self.state.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            message = f"Cannot create the store folder {self.state} ({err.strerror}); check it."
            raise StoreError(message) from err
        self.secret = secret or ProjectSecret.load_or_create(self.state / "secret")
        self._duplicates_lock = threading.Lock()

    def aside(self) -> ExportStore:
        """The same store writing into ``EXPORT_DIR/.usdcm/other``: instances set aside.

        Same keyed names, same atomic and synced writes, same duplicates log; ``usdcm ingest``
        never reads there (it skips ``.usdcm``).

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     store = ExportStore(Path(folder), ProjectSecret(b"k" * 32))
        ...     uids = {"study_uid": "1.2", "series_uid": "1.2.3", "sop_uid": "1.2.3.4"}
        ...     aside = store.aside().write_bytes(b"sr", **uids)
        ...     (aside.path.relative_to(folder).parts[:2], store.contains(**uids))
        (('.usdcm', 'other'), False)
        """
        other = copy.copy(self)  # shares the secret and the duplicates log's lock
        other.tree = self.state / OTHER_DIR
        return other

    @property
    def incoming(self) -> Path:
        """The spool folder for data sets still being received (same file system as the store)."""
        return self.state / INCOMING_DIR

    @property
    def duplicates_path(self) -> Path:
        return self.state / DUPLICATES_FILE

    def clean_incoming(self, *, stale_after_s: float = STALE_TEMP_S) -> int:
        """Remove what a killed run left half-written; the number of files removed.

        Nothing there was acknowledged: a file leaves the spool before its acknowledgement.
        The spool is emptied (one listener per store holds it); temp files beside the
        instances are removed once older than ``stale_after_s``, since a pull may be writing
        them now.
        """
        removed = 0
        self.incoming.mkdir(parents=True, exist_ok=True)
        for path in self.incoming.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        cutoff = time.time() - stale_after_s
        stale = [*self.root.glob("*/*/.*.tmp"), *(self.state / OTHER_DIR).glob("*/*/.*.tmp")]
        for path in stale:
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def keys(self, *, study_uid: str, series_uid: str, sop_uid: str) -> InstanceKeys:
        """The keyed hashes of an instance's UIDs (``study_key`` and ``image_id`` of ingest)."""
        return InstanceKeys(
            study=self.secret.pseudonym(study_uid, namespace="study"),
            series=self.secret.pseudonym(series_uid, namespace="series"),
            image=self.secret.pseudonym(sop_uid, namespace="image"),
        )

    def study_dir(self, study_key: str) -> Path:
        return self.tree / study_key

    def path_of(self, keys: InstanceKeys) -> Path:
        return self.tree / keys.study / keys.series / f"{keys.image}{SUFFIX}"

    def contains(self, *, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Whether this instance is stored already (in this store's tree)."""
        keys = self.keys(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        return self.path_of(keys).is_file()

    def _folder(self, keys: InstanceKeys) -> Path:
        """The series folder, created; new folders and their parents synced to disk."""
        series = self.tree / keys.study / keys.series
        if series.is_dir():
            return series
        new = [folder for folder in (series.parent, self.tree) if not folder.is_dir()]
        series.mkdir(parents=True, exist_ok=True)
        for folder in (series, *new):  # each new folder's entry is in its parent
            sync_folder(folder.parent)
        return series

    def _link(self, source: Path, keys: InstanceKeys, *, detail: dict[str, object]) -> Stored:
        """Link the complete, synced ``source`` to its final name, unless one is there."""
        final = self.path_of(keys)
        n_bytes = source.stat().st_size
        try:
            os.link(source, final)
        except FileExistsError:
            self._record_duplicate(final, source, keys, detail)
            return Stored(Outcome.DUPLICATE, final, keys, n_bytes)
        sync_folder(final.parent)
        return Stored(Outcome.STORED, final, keys, n_bytes)

    def store_file(
        self,
        source: Path,
        *,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        detail: dict[str, object] | None = None,
    ) -> Stored:
        """Store the complete DICOM file ``source`` (left in place; the caller removes it).

        On the store's file system the file is hard-linked, not copied; elsewhere it is copied
        in chunks. ``detail`` (no patient data: a calling AE, a transfer syntax) goes into the
        duplicates log if the instance is a duplicate.
        """
        keys = self.keys(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        folder = self._folder(keys)
        sync_file(source)
        try:
            return self._link(source, keys, detail=detail or {})
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
        with source.open("rb") as handle:
            return self._write_chunks(
                iter(lambda: handle.read(COPY_CHUNK_BYTES), b""), keys, folder, detail or {}
            )

    def write_bytes(
        self,
        data: bytes | Iterable[bytes],
        *,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        detail: dict[str, object] | None = None,
    ) -> Stored:
        """Store a DICOM file given as bytes or as an iterable of chunks (a download stream)."""
        keys = self.keys(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        folder = self._folder(keys)
        chunks = [data] if isinstance(data, bytes) else data
        return self._write_chunks(chunks, keys, folder, detail or {})

    def _write_chunks(
        self,
        chunks: Iterable[bytes],
        keys: InstanceKeys,
        folder: Path,
        detail: dict[str, object],
    ) -> Stored:
        fd, name = tempfile.mkstemp(prefix=f".{keys.image}.", suffix=".tmp", dir=folder)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            return self._link(tmp, keys, detail=detail)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _record_duplicate(
        self, first: Path, again: Path, keys: InstanceKeys, detail: dict[str, object]
    ) -> None:
        """Append one line to the duplicates log: keyed hashes, sizes, whether identical."""
        same_size = first.stat().st_size == again.stat().st_size
        identical = same_size and same_content(first, again)
        record = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "study": keys.study,
            "series": keys.series,
            "image": keys.image,
            "kept": str(first.relative_to(self.root)),
            "identical": identical,
            "bytes_kept": first.stat().st_size,
            "bytes_refused": again.stat().st_size,
            **detail,
        }
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._duplicates_lock, self.duplicates_path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def duplicates(self) -> list[dict[str, object]]:
        """The duplicates recorded so far, oldest first."""
        if not self.duplicates_path.is_file():
            return []
        lines = self.duplicates_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def same_content(first: Path, second: Path) -> bool:
    """Whether two files hold the same bytes (sizes first, then chunk by chunk)."""
    if first.stat().st_size != second.stat().st_size:
        return False
    with first.open("rb") as a, second.open("rb") as b:
        while True:
            chunk_a, chunk_b = a.read(COPY_CHUNK_BYTES), b.read(COPY_CHUNK_BYTES)
            if chunk_a != chunk_b:
                return False
            if not chunk_a:
                return True


class WorkStage(StrEnum):
    """The part of a study's work that failed."""

    INGEST = "ingest"
    PREDICT = "predict"
    WORK = "work"
    """A library user's ``on_study`` hook, or an unexpected error around the work."""


@dataclass(frozen=True)
class StudyFailure:
    """Why one attempt at a study's work failed; never patient data."""

    stage: WorkStage
    error: str
    """An exception type (``ValueError``) or an exit status (``exit 2``), never a message."""


@dataclass(frozen=True)
class Retry:
    """What the tracker did with a study whose work failed."""

    attempts: int
    """Failed attempts so far."""
    retry_in_s: float | None
    """Seconds until it is due again; None when that was its last attempt and it was given
    up (recorded in ``failed.jsonl``, removed from pending)."""


@dataclass
class PendingStudy:
    """A study that received instances and is not yet taken as complete."""

    key: str
    instances: int = 0
    last_seen: float = 0.0
    attempts: int = 0
    """Attempts of its work that failed so far."""
    retry_at: float = 0.0
    """Not due before this clock time: the backoff after a failed attempt."""
    done: set[WorkStage] = field(default_factory=set)
    """Stages that succeeded in an earlier attempt, not run again at a retry (an SR is not
    sent twice); emptied by a new instance."""


class StudyTracker:
    """Groups instances by study across associations; a study is complete after a quiet time.

    Thread-safe: association threads call :meth:`seen`, one timer thread calls :meth:`due`,
    the worker :meth:`done` or :meth:`failed`. The set of pending study keys, with the failed
    attempts of each, is saved in ``pending.json`` whenever it changes, before the instance that
    changed it is acknowledged, so a restart re-arms the timer of every study whose work had not
    run or had failed (its attempts kept).

    A study whose work failed is due again ``quiet_s * 2**attempts`` seconds later (at most
    :data:`MAX_BACKOFF_S`), or once quiet again if new instances arrive meanwhile. After
    ``retries + 1`` failed attempts it is given up: one line in ``failed.jsonl`` (its keyed
    hash, the stage and error, the attempts, the time) and it leaves ``pending.json``.

    Examples
    --------
    >>> import tempfile
    >>> clock = iter([0.0, 1.0, 2.0, 40.0]).__next__
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     tracker = StudyTracker(Path(folder) / "pending.json", quiet_s=30, clock=clock)
    ...     tracker.seen("a")
    ...     tracker.seen("a")
    ...     (tracker.due(), [study.key for study in tracker.due()])
    ([], ['a'])
    """

    def __init__(
        self,
        path: Path,
        *,
        quiet_s: float,
        retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.quiet_s = quiet_s
        self.retries = retries
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, PendingStudy] = {}
        self._working: dict[str, PendingStudy] = {}
        self.completed = 0
        if path.is_file():
            now = clock()
            for key, (attempts, done) in _read_pending(path).items():
                self._pending[key] = PendingStudy(key, 0, now, attempts, done=done)

    @property
    def failed_path(self) -> Path:
        """``failed.jsonl`` beside ``pending.json``: the studies given up."""
        return self.path.parent / FAILED_FILE

    @property
    def n_pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def restored(self) -> list[str]:
        """Study keys pending when the tracker was created (from an earlier run)."""
        with self._lock:
            return [key for key, study in self._pending.items() if study.instances == 0]

    def seen(self, key: str) -> None:
        """Count one instance of study ``key``; restart its quiet timer (ending a backoff)."""
        now = self._clock()
        with self._lock:
            study = self._pending.get(key)
            if study is None:
                working = self._working.get(key)
                attempts = working.attempts if working is not None else 0
                study = self._pending[key] = PendingStudy(key, attempts=attempts)
                self._save()
            study.instances += 1
            study.last_seen = now
            study.retry_at = 0.0
            if study.done:
                study.done = set()
                self._save()

    def due(self) -> list[PendingStudy]:
        """Studies quiet for ``quiet_s`` or longer (and past any backoff): taken as complete.

        They leave the pending set for the working set; they leave ``pending.json`` only when
        :meth:`done` says their work finished, or :meth:`failed` gives them up.
        """
        now = self._clock()
        with self._lock:
            ready = [
                study
                for study in self._pending.values()
                if now - study.last_seen >= self.quiet_s and now >= study.retry_at
            ]
            for study in ready:
                del self._pending[study.key]
                self._working[study.key] = study
            self.completed += len(ready)
            return ready

    def done(self, keys: Iterable[str]) -> None:
        """The work of these studies finished: they leave ``pending.json``."""
        with self._lock:
            for key in keys:
                self._working.pop(key, None)
                again = self._pending.get(key)  # new instances meanwhile: a fresh round
                if again is not None:
                    again.attempts = 0
            self._save()

    def failed(self, key: str, failure: StudyFailure, *, done: Iterable[WorkStage] = ()) -> Retry:
        """The work of study ``key`` failed: pending again after a backoff, or given up.

        ``done`` are the stages that succeeded; its retry skips them. A study that has now
        failed ``retries + 1`` times is written to ``failed.jsonl`` and leaves
        ``pending.json``; instances that arrive after that start it afresh. If
        ``failed.jsonl`` cannot be written, the ``OSError`` propagates and the study stays in
        ``pending.json`` (in work), so the next start tries it again.
        """
        now = self._clock()
        with self._lock:
            study = self._working.get(key) or PendingStudy(key, last_seen=now)
            attempts = study.attempts + 1
            again = self._pending.get(key)  # new instances arrived while it was in work
            if attempts > self.retries:
                self._record_failure(key, failure, attempts)
                self._working.pop(key, None)
                if again is not None:
                    again.attempts = 0
                self._save()
                return Retry(attempts, None)
            self._working.pop(key, None)
            if again is None:
                delay = min(self.quiet_s * 2**attempts, MAX_BACKOFF_S)
                study.attempts, study.retry_at = attempts, now + delay
                study.done = set(done)
                self._pending[key] = study
            else:  # due once quiet, as any study with new instances
                again.attempts = attempts
                delay = max(0.0, again.last_seen + self.quiet_s - now)
            self._save()
            return Retry(attempts, delay)

    def failures(self) -> list[dict[str, object]]:
        """The studies given up so far (``failed.jsonl``), oldest first."""
        if not self.failed_path.is_file():
            return []
        lines = self.failed_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def _record_failure(self, key: str, failure: StudyFailure, attempts: int) -> None:
        record = {
            "schema_version": FAILED_SCHEMA_VERSION,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "study": key,
            "stage": failure.stage.value,
            "error": failure.error,
            "attempts": attempts,
        }
        with self.failed_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _save(self) -> None:
        keys = sorted(set(self._pending) | set(self._working))
        retry: dict[str, dict[str, object]] = {}
        # a study both in work and pending again (new instances): the pending entry is newer
        for study in {**self._working, **self._pending}.values():
            if study.attempts or study.done:
                retry[study.key] = {
                    "attempts": study.attempts,
                    "done": sorted(stage.value for stage in study.done),
                }
        state = {
            "schema_version": PENDING_SCHEMA_VERSION,
            "pending": keys,
            "retry": dict(sorted(retry.items())),
        }
        atomic_write_text(self.path, json.dumps(state) + "\n")


def _read_pending(path: Path) -> dict[str, tuple[int, set[WorkStage]]]:
    """Pending study keys with their failed attempts and the stages done; a damaged file reads
    as empty.

    A file written by a newer usdcm (another ``schema_version``) is refused: its studies would
    be misread.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data.get("schema_version", 1)
        keys = data["pending"]
        retry = data.get("retry", {}) if version == PENDING_SCHEMA_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    if version not in (1, PENDING_SCHEMA_VERSION):
        message = (
            f"{path} has schema_version {version}; this usdcm reads 1 and "
            f"{PENDING_SCHEMA_VERSION}. Run a newer usdcm, or remove the file (its studies "
            "are then worked on when they next receive an instance)."
        )
        raise StoreError(message)
    if not isinstance(retry, dict):
        retry = {}
    return {key: _retry_state(retry.get(key)) for key in keys if isinstance(key, str)}


def _retry_state(entry: object) -> tuple[int, set[WorkStage]]:
    """``{"attempts": 2, "done": ["ingest"]}`` -> ``(2, {WorkStage.INGEST})``; tolerant."""
    if not isinstance(entry, dict):
        return 0, set()
    attempts = entry.get("attempts", 0)
    stages = entry.get("done", [])
    names = {stage.value for stage in WorkStage}
    done = {WorkStage(s) for s in stages if s in names} if isinstance(stages, list) else set()
    return (attempts if isinstance(attempts, int) and attempts > 0 else 0), done
