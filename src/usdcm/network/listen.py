"""``usdcm listen``: a C-STORE SCP (pynetdicom) that stores what scanners and PACS send.

Owns the association policy (which SOP classes and transfer syntaxes are accepted, which
calling AE titles, how many associations, the timeouts and TLS), the C-STORE handler, the
quiet timer that takes a study as complete, and the worker that then ingests it and classifies
it, retrying a study whose work failed. Storage itself is :mod:`usdcm.network.store`: a data set
is spooled to disk in chunks as it arrives (pynetdicom's ``STORE_RECV_CHUNKED_DATASET``), never
decoded, linked into the store and synced before the C-STORE response is sent, so a success
status always means "on disk".

Every storage SOP class is accepted, so a study that also holds an SR, a key object or a CT
never fails its sender. Instances of the classes ``--modality`` asks for (ultrasound always)
go into ``EXPORT_DIR``; the others are set aside, as durably, in ``EXPORT_DIR/.usdcm/other``
and start no study work.

Study work runs on one worker thread, never on an association thread: a slow model never
delays a C-STORE response. Logs name calling AE titles, counts and keyed study hashes, never a
UID or patient data; pynetdicom's own logger is kept at WARNING.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import queue
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from usdcm.dicom.sop import (
    ENHANCED_US_VOLUME_STORAGE,
    ULTRASOUND_IMAGE_SOP_CLASSES,
)
from usdcm.errors import ListenError, StoreError
from usdcm.network.store import (
    ExportStore,
    Outcome,
    PendingStudy,
    StudyFailure,
    StudyTracker,
    WorkStage,
)

if TYPE_CHECKING:
    from pynetdicom.ae import ApplicationEntity
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

    from usdcm.network.send import TlsOptions

LOGGER = logging.getLogger("usdcm.network.listen")

VERIFICATION = UID("1.2.840.10008.1.1")
STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."

#: Candidate transfer syntaxes, in order of preference; the compressed ones are accepted only
#: when pydicom has a decoder for them installed (usdcm must be able to read what it stores).
CANDIDATE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
)

#: Storage SOP classes by the ``--modality`` value that asks for them: UID prefixes under
#: ``1.2.840.10008.5.1.4.1.1.`` (a prefix ending in ``.`` or matching exactly).
MODALITY_PREFIXES: dict[str, tuple[str, ...]] = {
    "US": ("6.1", "3.1", "6", "3", "6.2"),
    "CR": ("1",),
    "DX": ("1.1", "1.1.1", "1.3", "1.3.1"),
    "MG": ("1.2", "1.2.1", "13.1.3", "13.1.4", "13.1.5"),
    "CT": ("2", "2.1", "2.2"),
    "MR": ("4", "4.1", "4.2", "4.3", "4.4"),
    "XA": ("12.1", "12.1.1", "12.2", "12.2.1", "13.1.1"),
    "NM": ("20",),
    "PT": ("128", "130", "128.1"),
    "SC": ("7", "7.1", "7.2", "7.3", "7.4"),
    "SR": ("88.",),
    "DOC": ("104.",),
}
ALL_MODALITIES = "ALL"

# C-STORE response statuses (PS3.4 Annex B.2.3)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000


def accepted_transfer_syntaxes() -> list[UID]:
    """Every transfer syntax usdcm can decode here, uncompressed first; then JPEG XL (when
    imagecodecs has it) and the video syntaxes (PyAV), which usdcm decodes itself.

    Examples
    --------
    >>> syntaxes = accepted_transfer_syntaxes()
    >>> syntaxes[0].name, JPEGBaseline8Bit in syntaxes, RLELossless in syntaxes
    ('Explicit VR Little Endian', True, True)
    """
    accepted = []
    for syntax in CANDIDATE_TRANSFER_SYNTAXES:
        if syntax.is_encapsulated:
            try:
                if not get_decoder(syntax).is_available:
                    continue
            except NotImplementedError:
                continue
        accepted.append(syntax)
    # JPEG XL and video: decoded by usdcm.dicom.codecs (imagecodecs, PyAV), not pydicom
    from usdcm.dicom.codecs import JPEG_XL_SYNTAXES, VIDEO_SYNTAXES, jpegxl_available

    if jpegxl_available():
        accepted.extend(sorted(JPEG_XL_SYNTAXES))
    accepted.extend(sorted(VIDEO_SYNTAXES))
    return accepted


def storage_classes(modalities: Iterable[str]) -> list[UID]:
    """The storage SOP classes stored in ``EXPORT_DIR`` for ``--modality`` values (``US`` is
    always in); ``["ALL"]`` gives every storage class, the ones accepted at negotiation.

    Examples
    --------
    >>> [uid.name for uid in storage_classes(["US"])][:2]
    ['Ultrasound Image Storage', 'Ultrasound Multi-frame Image Storage']
    >>> len(storage_classes(["US", "SR"])) > len(storage_classes(["US"]))
    True
    """
    from pynetdicom.presentation import AllStoragePresentationContexts

    wanted = {m.strip().upper() for m in modalities if m.strip()} | {"US"}
    unknown = wanted - set(MODALITY_PREFIXES) - {ALL_MODALITIES}
    if unknown:
        choices = ", ".join([*MODALITY_PREFIXES, ALL_MODALITIES])
        message = f"--modality {', '.join(sorted(unknown))} is not known; choose from {choices}."
        raise ListenError(message)
    known = [UID(str(cx.abstract_syntax)) for cx in AllStoragePresentationContexts]
    us_first = [
        UID("1.2.840.10008.5.1.4.1.1.6.1"),
        UID("1.2.840.10008.5.1.4.1.1.3.1"),
        *sorted(ULTRASOUND_IMAGE_SOP_CLASSES - {"1.2.840.10008.5.1.4.1.1.6.1"}),
        ENHANCED_US_VOLUME_STORAGE,
    ]
    classes: list[UID] = []
    for uid in [*us_first, *known]:
        if uid in classes:
            continue
        rest = uid.removeprefix(STORAGE_ROOT)
        if ALL_MODALITIES in wanted or any(
            rest == prefix or (prefix.endswith(".") and rest.startswith(prefix))
            for modality in wanted
            for prefix in MODALITY_PREFIXES.get(modality, ())
        ):
            classes.append(uid)
    return classes


@dataclass(frozen=True)
class ListenOptions:
    """How ``usdcm listen`` runs; every field has the CLI's default."""

    store: Path
    port: int = 11112
    host: str = "127.0.0.1"
    ae_title: str = "USDCM"
    allow_ae: tuple[str, ...] = ()
    """Calling AE titles accepted; empty accepts any."""
    modalities: tuple[str, ...] = ("US",)
    quiet_s: float = 30.0
    ingest_into: Path | None = None
    predict_run: Path | None = None
    send_dimse: str | None = None
    send_dicomweb: str | None = None
    send_tls: TlsOptions | None = None
    """TLS for the results' send (``--send-tls-ca``...); None sends in the clear."""
    sr_out: Path | None = None
    outbox: Path | None = None
    max_associations: int = 10
    network_timeout_s: float = 60.0
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    max_pdu: int = 131072
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    """Certificates of the CA that signs client certificates; when set, clients must have one."""
    grace_s: float = 30.0
    """At shutdown, how long associations in progress may take to finish before an abort."""
    retries: int = 3
    """How many times a study whose work (ingest, predict) failed is tried again."""


@dataclass(frozen=True)
class ListenStatus:
    """A snapshot of what the listener has done, for the status line."""

    associations_active: int
    associations_total: int
    associations_rejected: int
    instances: int
    """Instances stored in ``EXPORT_DIR`` (the classes ``--modality`` asks for)."""
    duplicates: int
    failed: int
    set_aside: int
    """Instances of other storage classes, acknowledged and kept in ``.usdcm/other``."""
    bytes_received: int
    """Bytes of the instances stored in ``EXPORT_DIR``."""
    studies_pending: int
    studies_working: int
    studies_done: int
    studies_failed: int
    """Studies given up after their last attempt (``failed.jsonl``)."""

    def line(self) -> str:
        """One line for a console or a log, counts only.

        Examples
        --------
        >>> ListenStatus(1, 3, 0, 10, 1, 0, 2, 2_000_000, 1, 0, 2, 0).line()
        'associations 1 active, 3 total, 0 rejected | instances 10 (2.0 MB), 1 duplicates, \
0 failed, 2 set aside | studies 1 pending, 0 in work, 2 done, 0 failed'
        """
        return (
            f"associations {self.associations_active} active, {self.associations_total} total, "
            f"{self.associations_rejected} rejected | instances {self.instances} "
            f"({self.bytes_received / 1e6:.1f} MB), {self.duplicates} duplicates, "
            f"{self.failed} failed, {self.set_aside} set aside | "
            f"studies {self.studies_pending} pending, "
            f"{self.studies_working} in work, {self.studies_done} done, "
            f"{self.studies_failed} failed"
        )


# indexes of an association's counts, and of the listener's instance counts
_STORED, _DUPLICATE, _FAILED, _SET_ASIDE = range(4)


@dataclass
class _Counters:
    active: int = 0
    total: int = 0
    rejected: int = 0
    instances: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    bytes: int = 0
    working: int = 0
    studies_done: int = 0
    studies_failed: int = 0
    per_association: dict[int, list[int]] = field(default_factory=dict)


def _tls_context(options: ListenOptions) -> ssl.SSLContext | None:
    if options.tls_cert is None and options.tls_key is None:
        return None
    if options.tls_cert is None or options.tls_key is None:
        raise ListenError("TLS needs both --tls-cert and --tls-key.")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=options.tls_cert, keyfile=options.tls_key)
        if options.tls_ca is not None:
            context.load_verify_locations(cafile=options.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as err:
        message = (
            f"Cannot load the TLS certificate {options.tls_cert} and key {options.tls_key} "
            f"({err}); give PEM files this user can read."
        )
        raise ListenError(message) from err
    return context


def _awaits_request(assoc: Any) -> bool:
    """Whether ``assoc`` is a TCP connection that never sent an A-ASSOCIATE-RQ.

    Nothing of it is in flight, so shutdown does not wait for it: pynetdicom's thread for it
    sleeps until the ACSE timeout even once the peer has closed the connection (a port
    check, or a load balancer's health check, does exactly that).
    """
    return assoc.requestor.primitive is None


class Listener:
    """A running C-STORE SCP with its study tracker and worker thread.

    Use :meth:`start`, then :meth:`stop` (or :func:`serve`, which does both around a
    ``threading.Event``). ``on_study`` replaces the worker's study work (ingest and predict)
    when given, for tests and library users: it receives the keys of the studies completed, and
    an exception it raises fails their work (retried, then given up, as a failed ingest).
    ``clock`` is the study tracker's (monotonic seconds): quiet times and backoffs are
    measured on it, so a test can move it past any backoff instead of waiting.
    """

    def __init__(
        self,
        options: ListenOptions,
        *,
        on_study: Callable[[list[str]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= options.port < 65536:
            raise ListenError(f"--port {options.port} is not a TCP port (1-65535).")
        if options.max_associations < 1:
            raise ListenError("--max-associations must be at least 1.")
        if options.quiet_s <= 0:
            raise ListenError("--quiet must be a positive duration such as 30s.")
        if options.retries < 0:
            raise ListenError(f"--retries is {options.retries}; give 0 or more.")
        if options.predict_run is not None and not options.predict_run.is_dir():
            message = f"--predict {options.predict_run} is not a run folder; give a trained run."
            raise ListenError(message)
        self.options = options
        self.store = ExportStore(options.store)
        self.aside = self.store.aside()
        self.tracker = StudyTracker(
            self.store.state / "pending.json",
            quiet_s=options.quiet_s,
            retries=options.retries,
            clock=clock,
        )
        self.classes = storage_classes(options.modalities)
        """Stored in ``EXPORT_DIR``; every other storage class is accepted and set aside."""
        self.accepted = storage_classes([ALL_MODALITIES])
        self._kept = frozenset(self.classes)
        self.syntaxes = accepted_transfer_syntaxes()
        self._tls = _tls_context(options)
        self._on_study = on_study
        self._lock = threading.Lock()
        self._counts = _Counters()
        self._jobs: queue.Queue[list[PendingStudy] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ThreadedAssociationServer | None = None
        self._ae: ApplicationEntity | None = None
        self._saved_globals: tuple[bool, str | None] | None = None
        self._store_lock: IO[str] | None = None

    # --- life cycle ---

    def start(self) -> None:
        """Bind the port and start accepting; returns once the server is listening."""
        from pynetdicom import AE, _config, evt

        self._lock_store()
        removed = self.store.clean_incoming()
        if removed:
            LOGGER.info("removed %d partly received file(s) left by an earlier run", removed)
        restored = self.tracker.restored()
        if restored:
            LOGGER.info("%d study(ies) pending from an earlier run; timers re-armed", len(restored))
        # pynetdicom spools each received data set to a NamedTemporaryFile: put those in the
        # store's spool folder, on the same file system, so storing is a link, not a copy.
        self._saved_globals = (_config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir)
        _config.STORE_RECV_CHUNKED_DATASET = True
        tempfile.tempdir = str(self.store.incoming)
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)

        ae = AE(ae_title=self.options.ae_title)
        ae.maximum_associations = self.options.max_associations
        ae.network_timeout = self.options.network_timeout_s
        ae.acse_timeout = self.options.acse_timeout_s
        ae.dimse_timeout = self.options.dimse_timeout_s
        ae.maximum_pdu_size = self.options.max_pdu
        if self.options.allow_ae:
            ae.require_calling_aet = list(self.options.allow_ae)
        ae.add_supported_context(VERIFICATION)
        for sop_class in self.accepted:  # an SCP may support more than 128 contexts
            ae.add_supported_context(sop_class, self.syntaxes)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_ACCEPTED, self._handle_accepted),
            (evt.EVT_REJECTED, self._handle_rejected),
            (evt.EVT_RELEASED, self._handle_ended),
            (evt.EVT_ABORTED, self._handle_ended),
        ]
        address = (self.options.host, self.options.port)
        try:
            server = ae.start_server(
                address, block=False, evt_handlers=handlers, ssl_context=self._tls
            )
        except OSError as err:
            self._restore_globals()
            self._unlock_store()
            message = (
                f"Cannot listen on {self.options.host}:{self.options.port} "
                f"({err.strerror or err}); choose another --port or --host."
            )
            raise ListenError(message) from err
        self._ae, self._server = ae, server
        for name, target in (("usdcm-quiet-timer", self._timer), ("usdcm-worker", self._worker)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        LOGGER.info(
            "listening on %s:%d as %s (%s%d storage classes kept, %d others set aside, "
            "%d transfer syntaxes)",
            self.options.host,
            self.port,
            self.options.ae_title,
            "TLS, " if self._tls else "",
            len(self.classes),
            len(self.accepted) - len(self.classes),
            len(self.syntaxes),
        )

    def _lock_store(self) -> None:
        """Hold ``EXPORT_DIR/.usdcm/listen.lock``: one listener per store (it owns the spool)."""
        path = self.store.state / "listen.lock"
        handle = path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.close()
            message = (
                f"Another usdcm listen is using the store {self.store.root}; stop it first "
                "or give another --store."
            )
            raise ListenError(message) from err
        self._store_lock = handle

    def _unlock_store(self) -> None:
        if self._store_lock is not None:
            self._store_lock.close()
            self._store_lock = None

    @property
    def port(self) -> int:
        """The port bound (the one asked for, or the OS's pick for port 0)."""
        if self._server is None:
            return self.options.port
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop accepting, let associations in progress finish, finish the study in work.

        Associations still open after ``grace_s`` are aborted (what they had acknowledged is
        on disk). Studies whose work has not started, or waits for a retry, stay in
        ``pending.json`` (with their failed attempts) for the next start. Idempotent.
        """
        if self._server is None:
            return
        self._server.shutdown()
        LOGGER.info("stopped accepting associations")
        deadline = time.monotonic() + self.options.grace_s
        ae = self._ae
        while ae is not None and time.monotonic() < deadline:
            for assoc in ae.active_associations:
                if not assoc.is_established:
                    assoc.abort()  # not (or no longer) associated: nothing in flight
            if all(_awaits_request(assoc) for assoc in ae.active_associations):
                break
            time.sleep(0.05)
        if ae is not None:
            for assoc in ae.active_associations:
                if not _awaits_request(assoc):
                    LOGGER.warning("aborting an association still open after the grace time")
                assoc.abort()
        self._stopping.set()
        self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self.tracker.done([])
        self._server = None
        self._restore_globals()
        self._unlock_store()
        LOGGER.info("stopped: %s", self.status().line())

    def _restore_globals(self) -> None:
        from pynetdicom import _config

        if self._saved_globals is not None:
            _config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir = self._saved_globals
            self._saved_globals = None

    def status(self) -> ListenStatus:
        """Counts so far (thread-safe)."""
        with self._lock:
            c = self._counts
            return ListenStatus(
                associations_active=c.active,
                associations_total=c.total,
                associations_rejected=c.rejected,
                instances=c.instances[_STORED],
                duplicates=c.instances[_DUPLICATE],
                failed=c.instances[_FAILED],
                set_aside=c.instances[_SET_ASIDE],
                bytes_received=c.bytes,
                studies_pending=self.tracker.n_pending,
                studies_working=c.working,
                studies_done=c.studies_done,
                studies_failed=c.studies_failed,
            )

    # --- association handlers (association threads) ---

    def _handle_accepted(self, event: Event) -> None:
        with self._lock:
            self._counts.active += 1
            self._counts.total += 1
            self._counts.per_association[id(event.assoc)] = [0, 0, 0, 0]
        LOGGER.info("association accepted from %s", _calling_ae(event))

    def _handle_rejected(self, event: Event) -> None:
        with self._lock:
            self._counts.rejected += 1
        LOGGER.warning("association rejected from %s", _calling_ae(event))

    def _handle_ended(self, event: Event) -> None:
        with self._lock:
            counts = self._counts.per_association.pop(id(event.assoc), None)
            if counts is None:
                return
            self._counts.active -= 1
        how = "released" if event.event.name == "EVT_RELEASED" else "aborted"
        LOGGER.info(
            "association from %s %s: %d stored, %d duplicates, %d failed, %d set aside",
            _calling_ae(event),
            how,
            *counts,
        )

    def _count(self, event: Event, index: int, n_bytes: int = 0) -> None:
        with self._lock:
            counts = self._counts.per_association.get(id(event.assoc))
            if counts is not None:
                counts[index] += 1
            self._counts.instances[index] += 1
            if index == _STORED:
                self._counts.bytes += n_bytes

    def _handle_store(self, event: Event) -> int:
        """Store one instance; answer success only once it is on disk."""
        try:
            status = self._store(event)
        except StoreError as err:
            LOGGER.warning("refused an instance from %s: %s", _calling_ae(event), err)
            status = STATUS_DATASET_MISMATCH
        except OSError as err:
            LOGGER.error(
                "cannot store an instance from %s: %s",
                _calling_ae(event),
                os.strerror(err.errno) if err.errno else type(err).__name__,
            )
            full = err.errno in (errno.ENOSPC, errno.EDQUOT)
            status = STATUS_OUT_OF_RESOURCES if full else STATUS_CANNOT_UNDERSTAND
        except Exception as err:  # a parser's message may quote header values: type only
            LOGGER.error(
                "cannot store an instance from %s: %s", _calling_ae(event), type(err).__name__
            )
            status = STATUS_CANNOT_UNDERSTAND
        if status != STATUS_SUCCESS:
            self._count(event, _FAILED)
        return status

    def _store(self, event: Event) -> int:
        """Store one instance, in ``EXPORT_DIR`` when its class is kept, else set aside."""
        path = Path(event.dataset_path)
        request = cast("C_STORE", event.request)
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        kept = str(request.AffectedSOPClassUID or event.context.abstract_syntax) in self._kept
        syntax = str(event.context.transfer_syntax)
        try:
            header = dcmread(
                path,
                stop_before_pixels=True,
                specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
            )
        except (InvalidDicomError, ValueError, EOFError) as err:
            raise StoreError("the data set cannot be parsed") from err
        study_uid = str(header.get("StudyInstanceUID", "") or "").strip()
        series_uid = str(header.get("SeriesInstanceUID", "") or "").strip()
        dataset_sop = str(header.get("SOPInstanceUID", "") or "").strip()
        if not study_uid or not series_uid or not sop_uid:
            raise StoreError("the data set has no Study, Series or SOP Instance UID")
        if dataset_sop and dataset_sop != sop_uid:
            raise StoreError("the data set's SOP Instance UID differs from the request's")
        calling = _calling_ae(event)
        stored = (self.store if kept else self.aside).store_file(
            path,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            detail={"calling_ae": calling, "transfer_syntax": syntax, "source": "listen"},
        )
        if kept:  # an instance set aside starts no study work
            self.tracker.seen(stored.keys.study)
        if stored.outcome is Outcome.DUPLICATE:
            LOGGER.warning(
                "duplicate instance in study %s from %s: the first copy is kept",
                stored.keys.study,
                calling,
            )
            self._count(event, _DUPLICATE)
        else:
            self._count(event, _STORED if kept else _SET_ASIDE, stored.n_bytes)
        return STATUS_SUCCESS

    # --- study work (timer and worker threads) ---

    def _timer(self) -> None:
        tick = min(1.0, self.options.quiet_s / 4)
        while not self._stopping.wait(tick):
            ready = self.tracker.due()
            if ready:
                for study in ready:
                    if study.attempts:
                        LOGGER.info(
                            "study %s due again (attempt %d of %d)",
                            study.key,
                            study.attempts + 1,
                            self.options.retries + 1,
                        )
                    else:
                        LOGGER.info(
                            "study %s complete (%d instance(s) this run, quiet for %gs)",
                            study.key,
                            study.instances,
                            self.options.quiet_s,
                        )
                with self._lock:
                    self._counts.working += len(ready)
                self._jobs.put(ready)

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stopping.is_set():
                return  # studies not worked on stay in pending.json for the next start
            studies = list(job)
            while True:  # several studies completed meanwhile: one ingest for all
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                studies.extend(more)
            try:
                failures = self._work(studies)
            except Exception as err:  # the worker must survive any one study's failure
                LOGGER.warning(
                    "study work failed for %d study(ies): %s", len(studies), type(err).__name__
                )
                LOGGER.debug("study work failure", exc_info=True)
                failure = StudyFailure(WorkStage.WORK, type(err).__name__)
                failures = {study.key: (failure, set(study.done)) for study in studies}
            self._settle([study.key for study in studies], failures)

    def _settle(
        self, keys: list[str], failures: dict[str, tuple[StudyFailure, set[WorkStage]]]
    ) -> None:
        """Studies whose work succeeded leave pending; failed ones wait to retry, or are given
        up after their last attempt (``failed.jsonl``, one ERROR line)."""
        self.tracker.done([key for key in keys if key not in failures])
        given_up = 0
        for key, (failure, passed) in failures.items():
            try:
                retry = self.tracker.failed(key, failure, done=passed)
            except OSError as err:
                LOGGER.error(
                    "cannot record the failure of study %s (%s); it stays pending for the "
                    "next start",
                    key,
                    os.strerror(err.errno) if err.errno else type(err).__name__,
                )
                continue
            if retry.retry_in_s is None:
                given_up += 1
                LOGGER.error(
                    "study %s given up after %d failed attempt(s), the last in %s (%s); "
                    "recorded in %s",
                    key,
                    retry.attempts,
                    failure.stage.value,
                    failure.error,
                    self.tracker.failed_path,
                )
            else:
                LOGGER.warning(
                    "study %s: %s failed (%s), attempt %d of %d; trying again in %.1fs",
                    key,
                    failure.stage.value,
                    failure.error,
                    retry.attempts,
                    self.options.retries + 1,
                    retry.retry_in_s,
                )
        with self._lock:
            self._counts.working -= len(keys)
            self._counts.studies_done += len(keys) - len(failures)
            self._counts.studies_failed += given_up

    def _work(self, studies: list[PendingStudy]) -> dict[str, tuple[StudyFailure, set[WorkStage]]]:
        """Ingest and classify the completed studies; for each that failed, the failure and the
        stages that succeeded (not run again at its retry: an SR is not sent twice)."""
        keys = [study.key for study in studies]
        if self._on_study is not None:
            try:
                self._on_study(keys)
            except Exception as err:  # logged by _settle: the type only, never the message
                failure = StudyFailure(WorkStage.WORK, type(err).__name__)
                return {key: (failure, set()) for key in keys}
            return {}
        failed: dict[str, StudyFailure] = {}
        passed = {study.key: set(study.done) for study in studies}
        if self.options.ingest_into is not None:
            todo = [study.key for study in studies if WorkStage.INGEST not in study.done]
            if todo:
                ingest_failure = self._ingest(todo)
                for key in todo:
                    if ingest_failure is None:
                        passed[key].add(WorkStage.INGEST)
                    else:
                        failed[key] = ingest_failure
        if self.options.predict_run is not None:
            for study in studies:
                if WorkStage.PREDICT in study.done:
                    continue
                predict_failure = self._predict(study.key)
                if predict_failure is None:
                    passed[study.key].add(WorkStage.PREDICT)
                else:
                    failed.setdefault(study.key, predict_failure)
        return {key: (failure, passed[key]) for key, failure in failed.items()}

    def _ingest(self, keys: list[str]) -> StudyFailure | None:
        """Incremental ``usdcm ingest`` of the store, in a child process (isolated from the
        association threads; the journal makes it convert only new files)."""
        data_dir = self.options.ingest_into
        assert data_dir is not None
        started = time.monotonic()
        command = [
            sys.executable,
            "-m",
            "usdcm",
            "ingest",
            str(self.store.root),
            "--out",
            str(data_dir),
            "--quiet",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        took = time.monotonic() - started
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            LOGGER.warning(
                "ingest after study(ies) %s failed (exit %d): %s",
                ", ".join(keys),
                result.returncode,
                last,
            )
            return StudyFailure(WorkStage.INGEST, f"exit {result.returncode}")
        LOGGER.info("ingested study(ies) %s into %s in %.1fs", ", ".join(keys), data_dir, took)
        return None

    def _predict(self, key: str) -> StudyFailure | None:
        """Classify one study and send the SR back (usdcm.network.results_back)."""
        from usdcm.network import results_back

        run = self.options.predict_run
        assert run is not None
        state = self.store.state
        started = time.monotonic()
        try:
            sent = results_back.classify_and_send(
                self.store.study_dir(key),
                run,
                sr_out=self.options.sr_out or state / "sr",
                dimse=self.options.send_dimse,
                dicomweb=self.options.send_dicomweb,
                outbox=self.options.outbox or state / "outbox",
                tls=self.options.send_tls,
            )
        except Exception as err:
            LOGGER.warning("predict on study %s failed: %s", key, type(err).__name__)
            LOGGER.debug("predict failure", exc_info=True)
            return StudyFailure(WorkStage.PREDICT, type(err).__name__)
        took = time.monotonic() - started
        LOGGER.info(
            "study %s classified in %.1fs; %d result object(s) written", key, took, len(sent)
        )
        return None


def _calling_ae(event: Event) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip() or "(empty AE title)"
    except AttributeError:
        return "(unknown AE)"


def serve(
    options: ListenOptions,
    stop: threading.Event,
    *,
    on_status: Callable[[ListenStatus], None] | None = None,
    status_every_s: float = 1.0,
) -> ListenStatus:
    """Run a :class:`Listener` until ``stop`` is set; the final counts.

    ``on_status`` is called every ``status_every_s`` with a snapshot (the CLI's status line).
    """
    listener = Listener(options)
    listener.start()
    try:
        while not stop.wait(status_every_s):
            if on_status is not None:
                on_status(listener.status())
    finally:
        listener.stop()
    return listener.status()
