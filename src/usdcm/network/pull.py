"""``usdcm pull``: QIDO-RS search, then WADO-RS retrieve of each study into an export store.

Owns the pull loop: which studies match, which of their instances the store lacks, and
fetching exactly those. QIDO-RS goes through ``dicomweb-client``; WADO-RS parts are read from
the same authenticated session as raw bytes, because ``dicomweb-client`` hands back parsed
data sets and its strict parse refuses instances a PACS holds anyway (a data set without
the Part 10 preamble and file meta, which Orthanc stores and serves as it was sent). Each
instance is written atomically, byte for byte as the server sent it (its
own transfer syntax, requested with ``transfer-syntax=*``), to
``EXPORT_DIR/<study>/<series>/<sop>.dcm``, with folder and file names that are keyed hashes,
the layout ``usdcm listen`` writes. Nothing but those files is ever the pull's state: a study
whose instances (per QIDO-RS) are all on disk is skipped, and a pull killed at any moment
resumes by fetching only what is missing. Never logs a UID or any patient data: progress
names studies by their keyed hash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

from usdcm.errors import OutputWriteError, PullError
from usdcm.network.store import ExportStore, Outcome

if TYPE_CHECKING:
    from dicomweb_client import DICOMwebClient

    from usdcm.network.auth import DicomwebConnection

log = logging.getLogger(__name__)
K = TypeVar("K")

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
PAGE_SIZE = 500
STALE_TMP_S = 60.0
_RESERVED_QUERY_KEYS = {"limit", "offset", "includefield", "fuzzymatching"}


# --- options, progress and result ----------------------------------------------------------


def check_uid(uid: str) -> str:
    """``uid`` stripped, if it is a DICOM UID (digits and dots, at most 64 characters).

    Examples
    --------
    >>> check_uid(" 1.2.840.10008 ")
    '1.2.840.10008'
    >>> check_uid("1.2/../x")
    Traceback (most recent call last):
    ...
    usdcm.errors.PullError: A study UID must be digits and dots (at most 64 characters).
    """
    uid = uid.strip()
    if not _UID.match(uid) or len(uid) > 64:
        raise PullError("A study UID must be digits and dots (at most 64 characters).")
    return uid


def parse_query(text: str) -> dict[str, str]:
    """A QIDO-RS study query (``"ModalitiesInStudy=US&StudyDate=20240101-20241231"``) as filters.

    Keys are DICOM keywords or 8-digit hex tags; paging and field selection are usdcm's job.

    Examples
    --------
    >>> parse_query("ModalitiesInStudy=US&StudyDate=20240101-20241231")
    {'ModalitiesInStudy': 'US', 'StudyDate': '20240101-20241231'}
    >>> parse_query("Modality=US&Colour=red")
    Traceback (most recent call last):
    ...
    usdcm.errors.PullError: --query key 'Colour' is not a DICOM keyword or tag (e.g. StudyDate=20240101-20241231).
    """  # noqa: E501
    from pydicom.datadict import tag_for_keyword

    try:
        pairs = parse_qsl(text.strip(), keep_blank_values=True, strict_parsing=True)
    except ValueError as err:
        message = f"--query must read KEY=VALUE&KEY=VALUE, found {text!r}."
        raise PullError(message) from err
    filters: dict[str, str] = {}
    for key, value in pairs:
        if key.lower() in _RESERVED_QUERY_KEYS:
            raise PullError(f"--query key {key!r} is set by usdcm pull itself; leave it out.")
        if tag_for_keyword(key) is None and not _TAG.match(key):
            message = (
                f"--query key {key!r} is not a DICOM keyword or tag "
                "(e.g. StudyDate=20240101-20241231)."
            )
            raise PullError(message)
        if key in filters:
            raise PullError(f"--query names {key!r} twice; use one range or list instead.")
        filters[key] = value
    return filters


@dataclass(frozen=True)
class StudyPulled:
    """What one study's pull did; ``study_key`` is its keyed hash, never its UID."""

    index: int
    n_studies: int
    study_key: str
    n_instances: int
    n_fetched: int
    n_bytes: int
    seconds: float
    error: str = ""

    @property
    def skipped(self) -> bool:
        """Already complete in the store: nothing fetched."""
        return not self.error and self.n_fetched == 0

    def line(self) -> str:
        """One progress line, for people and logs."""
        head = f"study {self.index}/{self.n_studies} {self.study_key[:12]}"
        if self.error:
            return f"{head}: FAILED ({self.error})"
        if self.skipped:
            return f"{head}: {self.n_instances} instances already stored"
        megabytes = self.n_bytes / 1e6
        return (
            f"{head}: {self.n_fetched} of {self.n_instances} instances fetched, "
            f"{megabytes:.1f} MB in {self.seconds:.1f} s"
        )


@dataclass
class PullResult:
    """Every study the search found, in order, with what was done about it."""

    store: Path
    studies: list[StudyPulled] = field(default_factory=list)

    @property
    def n_fetched(self) -> int:
        return sum(s.n_fetched for s in self.studies)

    @property
    def n_bytes(self) -> int:
        return sum(s.n_bytes for s in self.studies)

    @property
    def failed(self) -> list[StudyPulled]:
        return [s for s in self.studies if s.error]

    def summary(self) -> str:
        skipped = sum(1 for s in self.studies if s.skipped)
        return (
            f"{len(self.studies)} studies: {self.n_fetched} instances fetched "
            f"({self.n_bytes / 1e6:.1f} MB), {skipped} studies already stored, "
            f"{len(self.failed)} failed; store {self.store}"
        )


# --- DICOMweb calls, with errors that name no UID ---------------------------------------------


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0]).strip()


def _http_failure(err: BaseException, what: str) -> PullError:
    """A PullError for a failed request; the URL (which holds UIDs) is never repeated."""
    import requests

    if isinstance(err, requests.HTTPError) and err.response is not None:
        code = err.response.status_code
        hint = {
            401: "; check the credentials ($USDCM_DICOMWEB_TOKEN or $USDCM_DICOMWEB_BASIC)",
            403: "; the credentials are not allowed to read this",
            404: "; is the URL the DICOMweb root (e.g. http://host:8042/dicom-web)?",
        }.get(code, "")
        return PullError(f"{what}: HTTP {code} from the DICOMweb server{hint}.")
    if isinstance(err, requests.ConnectionError):
        return PullError(f"{what}: cannot connect to the DICOMweb server.")
    if isinstance(err, requests.Timeout):
        return PullError(f"{what}: the DICOMweb server did not answer in time.")
    return PullError(f"{what}: {type(err).__name__} from the DICOMweb client.")


def _fatal(cause: BaseException) -> bool:
    """Whether a failure stops the whole pull (no server, no permission) or one study only."""
    import requests

    if isinstance(cause, requests.HTTPError) and cause.response is not None:
        return cause.response.status_code in {401, 403}
    return isinstance(cause, requests.ConnectionError)


def _request_errors() -> tuple[type[BaseException], ...]:
    """What a DICOMweb call raises on a network, HTTP or payload failure."""
    import requests
    from pydicom.errors import InvalidDicomError

    return (requests.RequestException, ValueError, InvalidDicomError)


def _paged(
    search: Callable[[int | None, int], list[dict[str, Any]]],
    key: Callable[[dict[str, Any]], K],
) -> list[K]:
    """Every distinct key a QIDO-RS search finds, in order, paged with ``limit``/``offset``.

    ``search(limit, offset)`` runs one request. Paging is not trusted on its own: Orthanc's
    DICOMweb plugin 1.7 with ``ModalitiesInStudy`` answers nothing for any ``offset`` above 0,
    and without ``limit`` ignores ``offset`` (so ``dicomweb-client``'s ``get_remaining`` loops
    forever). When the first page is full, the pages are read while they add new keys, and
    the search is then also made once unpaged; the union is kept.
    """
    found: dict[K, None] = {}
    offset = 0
    while True:
        page = search(PAGE_SIZE, offset)
        before = len(found)
        found.update((key(item), None) for item in page)
        if offset == 0 and len(page) < PAGE_SIZE:
            return list(found)  # one short page: the whole answer
        if len(page) < PAGE_SIZE or len(found) == before:
            break
        offset += len(page)
    found.update((key(item), None) for item in search(None, 0))
    return list(found)


def search_studies(
    client: DICOMwebClient, *, studies: Sequence[str] = (), query: dict[str, str] | None = None
) -> list[str]:
    """The StudyInstanceUIDs to pull: ``studies`` as given (checked), or those ``query`` finds."""
    if studies:
        return list(dict.fromkeys(check_uid(uid) for uid in studies))
    try:
        found = _paged(
            lambda limit, offset: client.search_for_studies(
                search_filters=dict(query or {}),
                fields=["StudyInstanceUID"],
                limit=limit,
                offset=offset,
            ),
            lambda item: _value(item, STUDY_UID),
        )
    except _request_errors() as err:
        raise _http_failure(err, "QIDO-RS search for studies failed") from err
    return [uid for uid in found if uid]


def _search_instances(client: DICOMwebClient, study_uid: str) -> list[tuple[str, str]]:
    pairs = _paged(
        lambda limit, offset: client.search_for_instances(
            study_instance_uid=study_uid,
            fields=["SeriesInstanceUID", "SOPInstanceUID"],
            limit=limit,
            offset=offset,
        ),
        lambda item: (_value(item, SERIES_UID), _value(item, SOP_UID)),
    )
    return sorted(pair for pair in pairs if all(pair))


# --- WADO-RS: parts kept as the bytes the server sent ----------------------------------------


ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
"""Each instance in the transfer syntax the server holds (no transcoding)."""
CHUNK_BYTES = 1 << 20


def iter_parts(chunks: Iterable[bytes], boundary: bytes) -> Iterator[bytes]:
    r"""The bodies of a ``multipart/related`` stream, each as soon as it is complete.

    Raises :class:`PullError` when the stream ends before its closing delimiter (a dropped
    connection), so a cut answer is never taken for a complete one.

    Examples
    --------
    >>> body = b"--b\r\nContent-Type: application/dicom\r\n\r\nONE\r\n--b\r\n\r\nTWO\r\n--b--"
    >>> list(iter_parts([body[:9], body[9:30], body[30:]], b"b"))
    [b'ONE', b'TWO']
    >>> list(iter_parts([body[:-8]], b"b"))
    Traceback (most recent call last):
    ...
    usdcm.errors.PullError: the server's answer ended early, after 1 complete instances
    """
    delimiter = b"\r\n--" + boundary
    buffer = bytearray(b"\r\n")  # the first delimiter has no CRLF before it
    started = closed = at_delimiter = False
    n_parts = search = 0
    for chunk in chunks:
        buffer += chunk
        while True:
            if at_delimiter:  # "--" closes the stream; anything else starts a part
                if len(buffer) < 2:
                    break
                closed = buffer.startswith(b"--")
                at_delimiter = False
                if closed:
                    break
            index = buffer.find(delimiter, search)
            if index < 0:
                search = max(0, len(buffer) - len(delimiter) + 1)
                break
            if started:
                _head, found, body = bytes(buffer[:index]).partition(b"\r\n\r\n")
                if not found:
                    raise PullError("the server sent a multipart part without headers")
                n_parts += 1
                yield body
            started = at_delimiter = True
            del buffer[: index + len(delimiter)]
            search = 0
        if closed:
            break
    if not closed:
        message = f"the server's answer ended early, after {n_parts} complete instances"
        raise PullError(message)


def _boundary(content_type: str) -> bytes | None:
    """The ``boundary`` of a multipart Content-Type; None for a single ``application/dicom``."""
    media_type, *params = (part.strip() for part in content_type.split(";"))
    if media_type.lower() == "application/dicom":
        return None
    if media_type.lower() != "multipart/related":
        raise PullError(f"the server answered {media_type!r}, not multipart/related DICOM")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1")
    raise PullError("the server's multipart answer names no boundary")


def wado_parts(connection: DicomwebConnection, *path: str) -> Iterator[bytes]:
    """GET ``{root}/studies/...`` (WADO-RS) and yield each DICOM part's bytes, streamed."""
    url = "/".join([connection.url, *path])
    response = connection.session.get(
        url, headers={"Accept": ACCEPT}, stream=True, timeout=connection.timeout_s
    )
    with response:
        response.raise_for_status()
        boundary = _boundary(response.headers.get("Content-Type", ""))
        if boundary is None:  # non-conformant servers send one instance bare
            yield response.content
            return
        yield from iter_parts(response.iter_content(CHUNK_BYTES), boundary)


def part_uids(data: bytes) -> tuple[str, str, str]:
    """Study, Series and SOP Instance UIDs of one received part (header only, tolerant)."""
    import io

    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(
            io.BytesIO(data),
            force=True,
            stop_before_pixels=True,
            specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        )
    except (InvalidDicomError, ValueError, EOFError, OSError) as err:
        message = f"the server sent a part whose header cannot be read ({type(err).__name__})"
        raise PullError(message) from err
    uids = (
        str(header.get("StudyInstanceUID", "")).strip(),
        str(header.get("SeriesInstanceUID", "")).strip(),
        str(header.get("SOPInstanceUID", "")).strip(),
    )
    media_uid = getattr(getattr(header, "file_meta", None), "MediaStorageSOPInstanceUID", "")
    if not uids[2] and media_uid:
        uids = (uids[0], uids[1], str(media_uid).strip())
    if not all(uids):
        raise PullError("the server sent a part without Study, Series or SOP Instance UID")
    return uids


# --- the pull -------------------------------------------------------------------------------


class _Study:
    """One study's pull: write what arrives into the store, count it."""

    def __init__(self, store: ExportStore, study_uid: str, wanted: Iterable[tuple[str, str]]):
        self.store = store
        self.study_uid = study_uid
        self.wanted = set(wanted)
        self.n_fetched = 0
        self.n_bytes = 0

    def path(self, series_uid: str, sop_uid: str) -> Path:
        keys = self.store.keys(study_uid=self.study_uid, series_uid=series_uid, sop_uid=sop_uid)
        return self.store.path_of(keys)

    def missing(self) -> list[tuple[str, str]]:
        return sorted(pair for pair in self.wanted if not self.path(*pair).is_file())

    def clean_leftovers(self, missing: Iterable[tuple[str, str]]) -> None:
        """Remove temp files a killed pull left for ``missing`` (older than a minute, so a
        listen writing the same instance now is left alone)."""
        cutoff = time.time() - STALE_TMP_S
        for pair in missing:
            final = self.path(*pair)
            for tmp in final.parent.glob(f".{final.stem}.*.tmp"):
                with contextlib.suppress(OSError):
                    if tmp.stat().st_mtime < cutoff:
                        tmp.unlink()

    def write(self, data: bytes, series_uid: str | None = None, sop_uid: str | None = None) -> None:
        """Store one part as received; UIDs from its header unless the request named them."""
        if series_uid is None or sop_uid is None:
            study, series_uid, sop_uid = part_uids(data)
            if study != self.study_uid:
                raise PullError("the server sent an instance of another study")
        if self.path(series_uid, sop_uid).is_file():  # stored meanwhile (listen, this pull)
            return
        try:
            stored = self.store.write_bytes(
                data,
                study_uid=self.study_uid,
                series_uid=series_uid,
                sop_uid=sop_uid,
                detail={"via": "pull"},
            )
        except OSError as err:  # a full disk or an unwritable store stops the whole pull
            reason = os.strerror(err.errno) if err.errno else type(err).__name__
            message = f"Cannot write into the store {self.store.root} ({reason}); pull stopped."
            raise OutputWriteError(message) from err
        if stored.outcome is Outcome.STORED:
            self.n_fetched += 1
            self.n_bytes += stored.n_bytes


def _retrieve(
    connection: DicomwebConnection, study: _Study, missing: list[tuple[str, str]]
) -> None:
    """Fetch ``missing``: the whole study, whole series, or single instances, whichever fits."""
    uid = study.study_uid
    if len(missing) == len(study.wanted):
        for data in wado_parts(connection, "studies", uid):
            study.write(data)
        return
    by_series: dict[str, list[str]] = {}
    for series, sop in missing:
        by_series.setdefault(series, []).append(sop)
    in_series: dict[str, int] = {}
    for series, _sop in study.wanted:
        in_series[series] = in_series.get(series, 0) + 1
    for series, sops in sorted(by_series.items()):
        if len(sops) == in_series[series]:
            for data in wado_parts(connection, "studies", uid, "series", series):
                study.write(data)
            continue
        for sop in sops:
            path = ("studies", uid, "series", series, "instances", sop)
            for data in wado_parts(connection, *path):
                study.write(data, series, sop)


def pull_study(
    connection: DicomwebConnection,
    store: ExportStore,
    study_uid: str,
    index: int,
    n_studies: int,
) -> StudyPulled:
    """Pull one study: list its instances (QIDO-RS), fetch the missing ones (WADO-RS)."""
    started = time.monotonic()
    key = store.keys(study_uid=study_uid, series_uid="", sop_uid="").study

    def done(study: _Study | None, error: str = "") -> StudyPulled:
        return StudyPulled(
            index=index,
            n_studies=n_studies,
            study_key=key,
            n_instances=len(study.wanted) if study else 0,
            n_fetched=study.n_fetched if study else 0,
            n_bytes=study.n_bytes if study else 0,
            seconds=time.monotonic() - started,
            error=error,
        )

    try:
        wanted = _search_instances(connection.client, study_uid)
    except _request_errors() as err:
        failure = _http_failure(err, "QIDO-RS search for the study's instances failed")
        if _fatal(err):
            raise failure from err
        return done(None, str(failure).rstrip("."))
    if not wanted:
        return done(None, "the server lists no instance in this study")
    study = _Study(store, study_uid, wanted)
    missing = study.missing()
    if missing:
        study.clean_leftovers(missing)
        try:
            _retrieve(connection, study, missing)
        except PullError as err:
            return done(study, str(err))
        except _request_errors() as err:
            failure = _http_failure(err, "WADO-RS retrieve failed")
            if _fatal(err):
                raise failure from err
            return done(study, str(failure).rstrip("."))
    still = study.missing()
    if still:
        return done(study, f"{len(still)} listed instances did not arrive")
    return done(study)


def pull(
    connection: DicomwebConnection,
    store: Path,
    *,
    studies: Sequence[str] = (),
    query: dict[str, str] | None = None,
    on_study: Callable[[StudyPulled], None] | None = None,
) -> PullResult:
    """Search (``studies`` or ``query``), then pull each study into ``store``.

    A study whose QIDO-RS instance list is all on disk already is skipped; a failed study is
    reported in the result and the pull goes on, except when the server cannot be reached or
    refuses the credentials, which raises :class:`PullError` at once.
    """
    if studies and query:
        raise PullError("Give --study or --query, not both.")
    if not studies and query is None:
        raise PullError("Say what to pull: --study UID (repeatable) or --query KEY=VALUE&...")
    export = ExportStore(Path(store))
    uids = search_studies(connection.client, studies=studies, query=query)
    result = PullResult(Path(store))
    log.info("pull: %d studies to check", len(uids))
    for index, uid in enumerate(uids, start=1):
        pulled = pull_study(connection, export, uid, index, len(uids))
        result.studies.append(pulled)
        log.info("pull: %s", pulled.line())
        if on_study is not None:
            on_study(pulled)
    return result
