"""Send DICOM files to a PACS: C-STORE through a pynetdicom SCU (optionally over TLS), or
STOW-RS over the authenticated session of :mod:`usdcm.network.auth`; retries with backoff,
an outbox for what still fails, and :func:`resend` of what an outbox holds.

Owns the destination syntax (``AET@host:port``, a DICOMweb root URL without credentials),
the TLS client settings, the presentation contexts proposed (each file's own SOP class and
transfer syntax, read from its file meta), the retry policy and what counts as stored: a
C-STORE success or warning status, or a STOW-RS answer that lists no failed SOP instance.
Files are sent as they are on disk, never decoded or re-encoded (STOW-RS posts the file's
own bytes: dicomweb-client's ``store_instances`` would write each data set again through
pydicom). A peer that cannot be reached, or whose TLS handshake fails, fails the remaining
files at once, without trying each. The outbox's format is :mod:`usdcm.network.outbox`.
Reasons and logs name the destination, status codes and file names (usdcm's own names are
keyed hashes), never a UID, a patient attribute or a credential.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from usdcm.errors import SendError
from usdcm.network import outbox as box
from usdcm.network.outbox import REASON_SUFFIX

if TYPE_CHECKING:
    import ssl

    from usdcm.network.auth import DicomwebConnection

__all__ = [
    "REASON_SUFFIX",
    "DimseDestination",
    "Resent",
    "SendResult",
    "TlsOptions",
    "resend",
    "send_files",
]

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128
"""Presentation contexts one association may propose (PS3.8)."""

CONNECT_TIMEOUT_S = 5.0
"""TCP connection (and TLS handshake) timeout: a dead peer is found out in this time."""

PEER_TIMEOUT_S = 30.0
"""ACSE, DIMSE and network timeouts of an established association."""

CALLING_AE = "USDCM"

_DESTINATION = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})$")

# C-STORE statuses that store the instance (PS3.4 B.2.3): success and the three warnings.
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}

_UNREACHABLE = "peer unreachable"
_TLS_FAILED = "TLS handshake"
_FAIL_FAST = (_UNREACHABLE, _TLS_FAILED)
"""Reasons that say the peer cannot take anything now: no retry, no further file."""


@dataclass(frozen=True)
class DimseDestination:
    """A C-STORE SCP: called AE title, host and port.

    >>> DimseDestination.parse("ORTHANC@127.0.0.1:4242")
    DimseDestination(aet='ORTHANC', host='127.0.0.1', port=4242)
    >>> str(DimseDestination.parse("PACS@[::1]:104"))
    'PACS@[::1]:104'
    """

    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DimseDestination:
        """``AET@host:port``; raise :class:`SendError` naming the expected form."""
        found = _DESTINATION.match(text.strip())
        port = int(found["port"]) if found else 0
        if found is None or not 0 < port < 65536 or not found["aet"].strip():
            message = (
                f"{text!r} is not a DICOM destination: expected AET@host:port, for example "
                "PACS@10.0.0.5:104."
            )
            raise SendError(message)
        host = found["host"].strip("[]")
        return cls(aet=found["aet"].strip(), host=host, port=port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.aet}@{host}:{self.port}"


@dataclass(frozen=True)
class TlsOptions:
    """TLS on the sending side: the peer's certificate must be signed by ``ca`` and name the
    host sent to; ``cert`` (with ``key``, unless the PEM holds both) is a client certificate
    for peers that require one.

    For C-STORE it wraps the association (pynetdicom's ``tls_args``); for STOW-RS over
    ``https://`` it is each request's CA bundle and client certificate (instead of the
    system's CAs or ``$REQUESTS_CA_BUNDLE``).
    """

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def from_options(
        cls, ca: Path | None, cert: Path | None = None, key: Path | None = None
    ) -> TlsOptions | None:
        """The options given on the command line, checked (files load); None without any."""
        if ca is None and cert is None and key is None:
            return None
        if ca is None:
            message = (
                "--tls-cert/--tls-key give a client certificate; TLS is turned on by --tls-ca "
                "FILE, the CA that signed the peer's certificate: add it."
            )
            raise SendError(message)
        if key is not None and cert is None:
            raise SendError(f"--tls-key {key} needs --tls-cert, the certificate it belongs to.")
        options = cls(
            Path(ca), None if cert is None else Path(cert), None if key is None else Path(key)
        )
        options.context()
        return options

    def context(self) -> ssl.SSLContext:
        """A client ``SSLContext`` (TLS 1.2 or later, peer and host name verified);
        :class:`SendError` naming the file when one is missing or does not load."""
        import ssl

        for option, path in (
            ("--tls-ca", self.ca),
            ("--tls-cert", self.cert),
            ("--tls-key", self.key),
        ):
            if path is not None and not path.is_file():
                raise SendError(
                    f"{option} {path} does not exist or is not a file; give a PEM file."
                )
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        except (OSError, ssl.SSLError) as err:
            message = (
                f"--tls-ca {self.ca} does not load as PEM CA certificates ({_ssl_why(err)}); "
                "give the certificate of the CA that signed the peer's, in PEM form."
            )
            raise SendError(message) from err
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None:
            try:
                context.load_cert_chain(self.cert, self.key, password=self._encrypted_key)
            except (OSError, ssl.SSLError) as err:
                key = f" and --tls-key {self.key}" if self.key else " (no --tls-key)"
                message = (
                    f"--tls-cert {self.cert}{key} do not load as a client certificate and its "
                    f"private key ({_ssl_why(err)}); give both in PEM form."
                )
                raise SendError(message) from err
        return context

    def _encrypted_key(self) -> NoReturn:
        where = self.key or self.cert
        message = (
            f"the private key in {where} is encrypted; usdcm does not prompt for its password: "
            "give an unencrypted key, readable by this user only."
        )
        raise SendError(message)


def _ssl_why(err: BaseException) -> str:
    """An ``ssl`` error's short reason (``CERTIFICATE_VERIFY_FAILED``, ``PEM lib``...)."""
    verify = getattr(err, "verify_message", None)
    if verify:
        return str(verify)
    reason = getattr(err, "reason", None)
    if reason:
        return str(reason)
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


@dataclass
class SendResult:
    """What a send did: files stored by the peer, and files left in the outbox with why."""

    destination: str
    sent: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    """Each failed file's path in the outbox, and its reason."""
    outbox: Path | None = None

    @property
    def ok(self) -> bool:
        """True when every file was stored."""
        return not self.failed


Sender = Callable[[list[Path]], dict[Path, str]]
"""Sends files once; returns the reason of each file not stored (empty when all were)."""


def send_files(
    paths: Sequence[Path],
    *,
    dimse: str | None = None,
    dicomweb: str | None = None,
    outbox: Path,
    retries: int = 3,
    backoff_s: float = 1.0,
    token_file: Path | None = None,
    basic_file: Path | None = None,
    tls: TlsOptions | None = None,
) -> SendResult:
    """Send ``paths`` to one destination; what still fails after ``retries`` goes to ``outbox``.

    Parameters
    ----------
    paths
        DICOM Part 10 files, sent as they are.
    dimse
        ``AET@host:port`` of a C-STORE SCP.
    dicomweb
        The DICOMweb root URL of a STOW-RS service (``.../dicom-web``), without user,
        password or query; its token or ``user:password`` comes from the environment or
        ``token_file``/``basic_file`` (see ``usdcm.network.auth``).
    outbox
        Folder that keeps a copy of each file still failing, with ``.reason.json``
        (:mod:`usdcm.network.outbox`). An outbox entry sent is removed from it once the
        peer confirmed it; a file sent from elsewhere also clears its earlier entry.
    retries
        Further attempts after the first, for the files the peer refused or lost, with
        exponential backoff: ``backoff_s``, ``2 * backoff_s``... A peer that cannot be
        reached at all, or whose TLS handshake fails, is not retried: its files go to the
        outbox at once (send the outbox again later with :func:`resend`).
    token_file, basic_file
        A file holding the DICOMweb bearer token, or ``user:password``.
    tls
        TLS settings: C-STORE over TLS, or the CA (and client certificate) of an
        ``https://`` STOW-RS service. None: plain C-STORE, and the system's CAs for https.
    """
    if (dimse is None) == (dicomweb is None):
        message = "send to one destination: give either AET@host:port or a DICOMweb URL."
        raise SendError(message)
    if retries < 0 or backoff_s < 0:
        message = f"retries ({retries}) and backoff ({backoff_s} s) must not be negative."
        raise SendError(message)
    context = tls.context() if tls is not None else None
    sender: Sender
    if dimse is not None:
        destination = DimseDestination.parse(dimse)
        name = str(destination)
        sender = lambda batch: _send_dimse(batch, destination, context)  # noqa: E731
    else:
        assert dicomweb is not None
        name = check_url(dicomweb)
        if tls is not None and not name.startswith("https://"):
            message = f"TLS options apply to an https:// DICOMweb URL, not {name}."
            raise SendError(message)
        connection = _stow_connection(name, token_file, basic_file)
        settings = _stow_tls(tls)
        sender = lambda batch: _send_stow(batch, connection, settings)  # noqa: E731

    result = SendResult(destination=name, outbox=outbox)
    pending = [Path(p) for p in paths]
    tries = dict.fromkeys(pending, 0)
    reasons: dict[Path, str] = {}
    for round_ in range(retries + 1):
        if not pending:
            break
        if round_:
            time.sleep(backoff_s * 2 ** (round_ - 1))
        for path in pending:
            tries[path] += 1
        failed = sender(pending)
        for path in pending:
            if path not in failed:
                result.sent.append(path)
                box.leave(path, outbox)
        pending, reasons = [p for p in pending if p in failed], failed
        if failed:
            log.info(
                "send to %s: %d of %d files failed (attempt %d of %d)",
                name,
                len(failed),
                len(failed) + len(result.sent),
                round_ + 1,
                retries + 1,
            )
        if any(reason.startswith(_FAIL_FAST) for reason in failed.values()):
            break  # a dead peer fails fast: everything left goes to the outbox now
    for path in pending:
        reason = reasons.get(path, "not sent")
        kept = box.keep(
            path,
            outbox,
            destination=name,
            reason=reason,
            attempts=tries[path],
            tls=dimse is not None and tls is not None,
        )
        result.failed[kept] = reason
    log.info("send to %s: %d stored, %d in the outbox", name, len(result.sent), len(result.failed))
    return result


def check_url(url: str) -> str:
    """``url`` without a trailing slash; :class:`SendError` unless it is an http(s) root with
    a host and no credential, query or fragment (which could hold one).

    >>> check_url("https://pacs.example.org/dicom-web/")
    'https://pacs.example.org/dicom-web'
    """
    text = url.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        has_user = parts.username is not None or parts.password is not None
    except ValueError:
        parts, has_user = None, False
    if has_user:  # never repeat such a URL: it holds a password
        message = (
            "the DICOMweb URL holds a user name or password; put the credential in "
            "$USDCM_DICOMWEB_BASIC (user:password) or a --basic-file, never in the URL."
        )
        raise SendError(message)
    if parts is not None and (parts.query or parts.fragment):
        message = (
            "the DICOMweb URL has a query or fragment (?... or #...); give the service's "
            "root, such as https://pacs/dicom-web, and a token in $USDCM_DICOMWEB_TOKEN."
        )
        raise SendError(message)
    if parts is None or parts.scheme not in {"http", "https"} or not parts.hostname:
        message = f"{url!r} is not a DICOMweb URL: expected http(s)://host/..., such as https://pacs/dicom-web."
        raise SendError(message)
    return text


def _file_meta(path: Path) -> tuple[str, str, str]:
    """The SOP class, transfer syntax and SOP instance in ``path``'s file meta."""
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
        return (
            str(meta.MediaStorageSOPClassUID),
            str(meta.TransferSyntaxUID),
            str(meta.MediaStorageSOPInstanceUID),
        )
    except (OSError, InvalidDicomError, AttributeError) as err:
        message = f"{path.name} is not a DICOM file with file meta ({type(err).__name__})"
        raise SendError(message) from err


def _file_context(path: Path) -> tuple[str, str]:
    """The SOP class and transfer syntax in ``path``'s file meta."""
    sop_class, syntax, _ = _file_meta(path)
    return sop_class, syntax


def _send_dimse(
    paths: list[Path], destination: DimseDestination, tls: ssl.SSLContext | None = None
) -> dict[Path, str]:
    """One C-STORE pass over ``paths``: associations proposing each file's own context."""
    failed: dict[Path, str] = {}
    contexts: dict[Path, tuple[str, str]] = {}
    for path in paths:
        try:
            contexts[path] = _file_context(path)
        except SendError as err:
            failed[path] = str(err)
    batches: list[list[Path]] = []
    seen: set[tuple[str, str]] = set()
    for path, context in contexts.items():
        if context not in seen and len(seen) == MAX_CONTEXTS or not batches:
            batches.append([])
            seen = set()
        seen.add(context)
        batches[-1].append(path)
    for index, batch in enumerate(batches):
        outcome = _send_association(batch, {contexts[path] for path in batch}, destination, tls)
        failed.update(outcome)
        if any(reason.startswith(_FAIL_FAST) for reason in outcome.values()):
            for rest in batches[index + 1 :]:  # the peer is down: do not knock again now
                failed.update(dict.fromkeys(rest, outcome[batch[0]]))
            break
    return failed


def _send_association(
    paths: list[Path],
    contexts: set[tuple[str, str]],
    destination: DimseDestination,
    tls: ssl.SSLContext | None = None,
) -> dict[Path, str]:
    """C-STORE ``paths`` over one association; the reason of each file not stored."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE, evt

    ae = AE(ae_title=CALLING_AE)
    ae.connection_timeout = CONNECT_TIMEOUT_S
    ae.acse_timeout = PEER_TIMEOUT_S
    ae.dimse_timeout = PEER_TIMEOUT_S
    ae.network_timeout = PEER_TIMEOUT_S
    for sop_class, syntax in sorted(contexts):
        syntaxes = [syntax]
        if syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        ae.add_requested_context(sop_class, syntaxes)
    opened: list[bool] = []  # pynetdicom says only "aborted" when no TCP connection opened
    association = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.aet,
        tls_args=(tls, destination.host) if tls is not None else None,
        evt_handlers=[(evt.EVT_CONN_OPEN, lambda _event: opened.append(True))],
    )
    if not association.is_established and not opened:
        # asked only after a failure: a probe before every association would leave each
        # peer an empty connection to time out (pynetdicom's SCP keeps it 30 s)
        unreachable = _probe(destination)
        if unreachable:
            return dict.fromkeys(paths, unreachable)
    if not association.is_established and tls is not None:
        handshake = _tls_failure(destination, tls)
        if handshake:
            return dict.fromkeys(paths, handshake)
    if not association.is_established:
        why = "rejected" if association.is_rejected else "aborted"
        hint = (
            "no proposed context accepted?" if tls else "no proposed context accepted, or TLS only?"
        )
        reason = f"association {why} by {destination} ({hint})"
        return dict.fromkeys(paths, reason)
    accepted = {
        (str(context.abstract_syntax), str(context.transfer_syntax[0]))
        for context in association.accepted_contexts
    }
    by_class = {str(context.abstract_syntax) for context in association.accepted_contexts}
    failed: dict[Path, str] = {}
    try:
        for path in paths:
            if not association.is_established:
                failed[path] = "association lost before this file"
                continue
            sop_class, syntax = _file_context(path)
            if (sop_class, syntax) not in accepted and sop_class not in by_class:
                failed[path] = f"the peer accepts no {_name(sop_class)} in {_name(syntax)}"
                continue
            try:
                status = association.send_c_store(path)
            except (AttributeError, ValueError, RuntimeError, OSError) as err:
                failed[path] = f"not sent: {type(err).__name__}"
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in _STORED:
                shown = "no response" if code < 0 else f"status 0x{code:04X}"
                failed[path] = f"C-STORE failed: {shown}"
    finally:
        if association.is_established:
            association.release()
    return failed


def _probe(destination: DimseDestination) -> str:
    """Why ``destination`` takes no TCP connection, or ``""`` when it does."""
    import socket

    try:
        with socket.create_connection(
            (destination.host, destination.port), timeout=CONNECT_TIMEOUT_S
        ):
            return ""
    except OSError as err:
        why = err.strerror or type(err).__name__
        return f"{_UNREACHABLE}: {destination}: {why}"


def _tls_failure(destination: DimseDestination, tls: ssl.SSLContext) -> str:
    """Why a TLS handshake with ``destination`` fails, or ``""`` when it succeeds.

    Asked only once an association over TLS failed: pynetdicom logs a failed handshake but
    reports only an aborted association. A handshake that succeeds is closed with
    close_notify, so the peer does not wait for an association request that never comes.
    """
    import socket
    import ssl

    try:
        with (
            socket.create_connection(
                (destination.host, destination.port), timeout=CONNECT_TIMEOUT_S
            ) as sock,
            tls.wrap_socket(sock, server_hostname=destination.host) as wrapped,
        ):
            # under TLS 1.3 a refused client certificate arrives as an alert after the
            # handshake: wait for it briefly (the peer otherwise waits for our request)
            wrapped.settimeout(1.0)
            with contextlib.suppress(TimeoutError):
                wrapped.recv(1)
            with contextlib.suppress(OSError):
                wrapped.unwrap()
            return ""
    except ssl.SSLCertVerificationError as err:
        why = f"{_ssl_why(err)}; is --tls-ca the CA that signed its certificate?"
    except ssl.SSLError as err:
        why = _ssl_why(err)
        if "CERTIFICATE_REQUIRED" in why.upper():
            why += "; the peer requires a client certificate: add --tls-cert and --tls-key"
    except OSError as err:  # closed, reset or timed out mid-handshake
        why = f"{err.strerror or type(err).__name__}; does the peer speak TLS on this port?"
    return f"{_TLS_FAILED} with {destination} failed: {why}"


def _name(uid: str) -> str:
    """A SOP class or transfer syntax by its name (never an instance UID)."""
    from pydicom.uid import UID

    return str(UID(uid).name)


def _stow_connection(
    url: str, token_file: Path | None, basic_file: Path | None
) -> DicomwebConnection:
    """The authenticated session of :func:`usdcm.network.auth.connect` for ``url``
    (credentials from the environment or a file, never argv)."""
    from usdcm.network.auth import connect

    return connect(url, token_file=token_file, basic_file=basic_file)


def _stow_tls(tls: TlsOptions | None) -> dict[str, Any]:
    """The ``verify`` and ``cert`` of each STOW-RS request under ``tls`` (empty without).

    Given per request: requests lets ``$REQUESTS_CA_BUNDLE`` override a session's ``verify``.
    """
    if tls is None:
        return {}
    settings: dict[str, Any] = {"verify": str(tls.ca)}
    if tls.cert is not None:
        cert = str(tls.cert)
        settings["cert"] = (cert, str(tls.key)) if tls.key is not None else cert
    return settings


def _send_stow(
    paths: list[Path], connection: DicomwebConnection, tls: dict[str, Any] | None = None
) -> dict[Path, str]:
    """STOW-RS each file, as its bytes on disk; the reason of each file not stored.

    ``tls``: the requests' ``verify`` and ``cert`` (:func:`_stow_tls`).
    """
    import requests

    url = f"{connection.url}/studies"
    failed: dict[Path, str] = {}
    for index, path in enumerate(paths):
        try:
            instance = _file_meta(path)[2]
            data = path.read_bytes()
        except SendError as err:
            failed[path] = str(err)
            continue
        except OSError as err:
            failed[path] = f"cannot read {path.name} ({type(err).__name__})"
            continue
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii"),
                data,
                f"\r\n--{boundary}--\r\n".encode("ascii"),
            ]
        )
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        try:
            response = connection.session.post(
                url, data=body, headers=headers, timeout=connection.timeout_s, **(tls or {})
            )
        except requests.exceptions.SSLError as err:
            reason = f"{_TLS_FAILED} with {connection.url} failed: {_ssl_why(_ssl_cause(err))}"
            return {**failed, **dict.fromkeys(paths[index:], reason)}
        except requests.exceptions.ConnectionError:
            reason = f"{_UNREACHABLE}: no connection to the STOW-RS service {connection.url}"
            return {**failed, **dict.fromkeys(paths[index:], reason)}
        except requests.exceptions.RequestException as err:
            failed[path] = f"STOW-RS failed: {type(err).__name__}"
            continue
        refused = _stow_refusal(response, instance)
        if refused:
            failed[path] = refused
    return failed


def _ssl_cause(err: BaseException) -> BaseException:
    """The ``ssl`` error inside what requests and urllib3 wrap around it (else ``err``)."""
    import ssl

    seen: set[int] = set()
    todo: list[object] = [err]
    while todo:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLError):
            return item
        todo.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])
    return err


def _stow_refusal(response: Any, instance: str) -> str:
    """Why a STOW-RS answer does not confirm ``instance``; ``""`` when it does.

    Confirmed: HTTP 200 or 202 with no item in FailedSOPSequence (absent or empty), and
    ``instance`` in ReferencedSOPSequence when the answer lists any (202 must list it).
    """
    import pydicom

    code = int(response.status_code)
    answer: Any = None
    kind = str(response.headers.get("Content-Type", "")).split(";")[0].strip().lower()
    if response.content and kind in {"application/dicom+json", "application/json"}:
        try:
            answer = pydicom.Dataset.from_json(response.json())
        except (ValueError, TypeError, KeyError):
            answer = None
    refused = list(answer.get("FailedSOPSequence", None) or []) if answer is not None else []
    if refused:  # an absent or empty FailedSOPSequence means nothing failed
        reasons = sorted({f"0x{int(item.get('FailureReason', 0)):04X}" for item in refused})
        return f"STOW-RS refused the instance: failure reason {', '.join(reasons)}"
    if code not in (200, 202):
        hint = " (credentials refused)" if code in (401, 403) else ""
        return f"STOW-RS failed: HTTP {code}{hint}"
    stored = answer.get("ReferencedSOPSequence", None) if answer is not None else None
    listed = {str(item.get("ReferencedSOPInstanceUID", "")) for item in stored or []}
    if (stored or code == 202) and instance not in listed:
        return f"STOW-RS answered HTTP {code} without listing the instance as stored"
    return ""


@dataclass
class Resent:
    """What :func:`resend` did: files the peers confirmed, files still failing (their outbox
    entries and reasons), files skipped as not DICOM, and the outbox's entries afterwards."""

    outbox: Path
    sent: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    skipped: list[Path] = field(default_factory=list)
    remaining: int = 0
    destinations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: sent, still failing, the outbox and what it holds.

        >>> Resent(Path("out"), remaining=1).summary()
        'sent 0, still failing 0; outbox out: 1 file'
        """
        skipped = f", {_files(len(self.skipped))} skipped (not DICOM)" if self.skipped else ""
        return (
            f"sent {len(self.sent)}, still failing {len(self.failed)}{skipped}; "
            f"outbox {self.outbox}: {_files(self.remaining)}"
        )


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def _is_part10(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _inputs(source: Path) -> tuple[list[Path], list[Path], Path]:
    """The files to send from ``source``, the files skipped, and the default outbox.

    An outbox (a folder with entries, or an entry) sends its entries and is its own outbox;
    any other folder sends its DICOM Part 10 files (not those of its subfolders) and keeps
    failures in ``source/outbox``; a plain file keeps them in ``outbox`` beside it.
    """
    if source.is_dir():
        found = box.entries(source)
        if found:
            return found, [], source
        files = sorted(
            p
            for p in source.iterdir()
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(REASON_SUFFIX)
        )
        sent = [p for p in files if _is_part10(p)]
        # nothing to send (an outbox emptied by an earlier send): the folder is the outbox
        default = source / "outbox" if sent else source
        return sent, [p for p in files if p not in sent], default
    if source.is_file():
        if box.is_entry(source):
            return [source], [], source.parent
        if not _is_part10(source):
            raise SendError(f"{source} is not a DICOM Part 10 file (no DICM at byte 128).")
        return [source], [], source.parent / "outbox"
    raise SendError(f"{source} does not exist; give an outbox folder, a folder or a DICOM file.")


def _recorded_destinations(files: list[Path]) -> dict[tuple[str, bool], list[Path]]:
    """The files grouped by the destination (and TLS) their reason records."""
    groups: dict[tuple[str, bool], list[Path]] = {}
    unrecorded = 0
    for path in files:
        reason = box.read_reason(path)
        if reason is None or not reason.destination.strip():
            unrecorded += 1
            continue
        groups.setdefault((reason.destination.strip(), reason.tls), []).append(path)
    if unrecorded:
        message = (
            f"{unrecorded} of {len(files)} files have no destination recorded in a "
            f"{REASON_SUFFIX}: give --to AET@host:port or --dicomweb URL."
        )
        raise SendError(message)
    return groups


def _is_url(destination: str) -> bool:
    return destination.lower().startswith(("http://", "https://"))


def resend(
    source: Path,
    *,
    dimse: str | None = None,
    dicomweb: str | None = None,
    outbox: Path | None = None,
    tls: TlsOptions | None = None,
    retries: int = 2,
    backoff_s: float = 1.0,
    token_file: Path | None = None,
    basic_file: Path | None = None,
) -> Resent:
    """Send again what an outbox holds (``usdcm send``), or a folder or file of DICOM files.

    Parameters
    ----------
    source
        An outbox folder (its entries: files with ``.reason.json``), an entry, any other
        folder (its DICOM Part 10 files, not its subfolders'), or one DICOM file. Files are
        sent as they are. An entry leaves the outbox once the peer confirmed it; a file that
        fails stays, its reason updated (attempts, last error, time). Files outside an
        outbox are never removed.
    dimse, dicomweb
        The destination. With neither, each entry goes where its reason file says it was
        going (``AET@host:port`` or a DICOMweb URL, which never holds a credential), over
        TLS when it was sent with TLS (then ``tls`` is required: never plain instead).
    outbox
        Where files still failing are kept; default ``source`` when it is an outbox, else
        ``source/outbox`` (for a file, ``outbox`` beside it).
    tls, retries, backoff_s, token_file, basic_file
        As for :func:`send_files`.
    """
    if dimse is not None and dicomweb is not None:
        message = "give one destination: --to AET@host:port or --dicomweb URL, not both."
        raise SendError(message)
    files, skipped, default_outbox = _inputs(source)
    is_outbox = bool(files) and box.is_entry(files[0])
    if is_outbox and outbox is not None and outbox.resolve() != default_outbox.resolve():
        message = (
            f"{source} is an outbox, and its files stay in it until sent: --outbox applies "
            "to a folder or file that is not one."
        )
        raise SendError(message)
    outbox = outbox if outbox is not None else default_outbox
    if dimse is not None or dicomweb is not None:
        groups = {(dimse or dicomweb or "", tls is not None): files} if files else {}
    else:
        groups = _recorded_destinations(files)
    plan: list[tuple[dict[str, str], list[Path]]] = []
    for (destination, was_tls), group in groups.items():
        if _is_url(destination):
            target = {"dicomweb": check_url(destination)}
            if tls is not None and not target["dicomweb"].startswith("https://"):
                message = f"TLS options apply to an https:// DICOMweb URL, not {destination}."
                raise SendError(message)
        else:
            target = {"dimse": str(DimseDestination.parse(destination))}
            if was_tls and tls is None:
                message = (
                    f"{len(group)} files were sent to {target['dimse']} over TLS: give "
                    "--tls-ca FILE (usdcm never sends them in the clear instead)."
                )
                raise SendError(message)
        plan.append((target, group))
    result = Resent(outbox=outbox, skipped=skipped)
    for target, group in plan:
        sent = send_files(
            group,
            dimse=target.get("dimse"),
            dicomweb=target.get("dicomweb"),
            outbox=outbox,
            retries=retries,
            backoff_s=backoff_s,
            token_file=token_file,
            basic_file=basic_file,
            tls=tls,
        )
        result.destinations.append(sent.destination)
        result.sent.extend(sent.sent)
        result.failed.update(sent.failed)
    result.remaining = len(box.entries(outbox))
    return result
