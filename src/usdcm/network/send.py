"""Send DICOM files to a PACS: C-STORE through a pynetdicom SCU, or STOW-RS through
dicomweb-client; retries with backoff, and an outbox for what still fails.

Owns the destination syntax (``AET@host:port``), the presentation contexts proposed (each
file's own SOP class and transfer syntax, read from its file meta), the retry policy and the
outbox (``OUTBOX/<file name>`` plus ``OUTBOX/<file name>.reason.json``). Files are sent as
they are on disk, never decoded or changed. A peer that cannot be reached after the retries
fails the remaining files at once, without trying each. Reasons and logs name the
destination, status codes and file names (usdcm's own names are keyed hashes), never a UID or
a patient attribute.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from usdcm.atomic import atomic_write_text
from usdcm.errors import SendError

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128
"""Presentation contexts one association may propose (PS3.8)."""

CONNECT_TIMEOUT_S = 5.0
"""TCP connection timeout: a dead peer is found out in this time, not the ACSE timeout."""

PEER_TIMEOUT_S = 30.0
"""ACSE, DIMSE and network timeouts of an established association."""

CALLING_AE = "USDCM"

REASON_SUFFIX = ".reason.json"

_DESTINATION = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})$")

# C-STORE statuses that store the instance (PS3.4 B.2.3): success and the three warnings.
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}


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
            message = f"--send {text!r}: expected AET@host:port, for example PACS@10.0.0.5:104."
            raise SendError(message)
        host = found["host"].strip("[]")
        return cls(aet=found["aet"].strip(), host=host, port=port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.aet}@{host}:{self.port}"


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


@dataclass
class _Attempt:
    """Files still to send, and the last reason each one failed."""

    pending: list[Path]
    reasons: dict[Path, str] = field(default_factory=dict)


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
) -> SendResult:
    """Send ``paths`` to one destination; what still fails after ``retries`` goes to ``outbox``.

    Parameters
    ----------
    paths
        DICOM Part 10 files, sent as they are.
    dimse
        ``AET@host:port`` of a C-STORE SCP.
    dicomweb
        The DICOMweb root URL of a STOW-RS service (``.../dicom-web``); its token or
        ``user:password`` comes from the environment (see ``usdcm.network.auth``).
    outbox
        Folder that receives a copy of each file still failing, with ``.reason.json``.
        A file sent from the outbox itself is removed from it once stored.
    retries
        Further attempts after the first, for the files the peer refused or lost, with
        exponential backoff: ``backoff_s``, ``2 * backoff_s``... A peer that cannot be
        reached at all is not retried: its files go to the outbox at once (send the
        outbox's files again later).
    token_file
        A file holding the DICOMweb bearer token.
    """
    if (dimse is None) == (dicomweb is None):
        message = (
            "send to one destination: give either --send AET@host:port or --send-dicomweb URL."
        )
        raise SendError(message)
    if retries < 0 or backoff_s < 0:
        message = f"retries ({retries}) and backoff ({backoff_s} s) must not be negative."
        raise SendError(message)
    sender: Sender
    if dimse is not None:
        destination = DimseDestination.parse(dimse)
        name = str(destination)
        sender = lambda batch: _send_dimse(batch, destination)  # noqa: E731
    else:
        assert dicomweb is not None
        name = _check_url(dicomweb)
        client = _dicomweb_client(name, token_file)
        sender = lambda batch: _send_stow(batch, client)  # noqa: E731

    result = SendResult(destination=name, outbox=outbox)
    attempt = _Attempt(pending=[Path(p) for p in paths])
    for round_ in range(retries + 1):
        if not attempt.pending:
            break
        if round_:
            time.sleep(backoff_s * 2 ** (round_ - 1))
        failed = sender(attempt.pending)
        for path in attempt.pending:
            if path not in failed:
                result.sent.append(path)
                _leave_outbox(path, outbox)
        attempt = _Attempt(pending=[p for p in attempt.pending if p in failed], reasons=failed)
        if failed:
            log.info(
                "send to %s: %d of %d files failed (attempt %d of %d)",
                name,
                len(failed),
                len(failed) + len(result.sent),
                round_ + 1,
                retries + 1,
            )
        if any(reason.startswith(_UNREACHABLE) for reason in failed.values()):
            break  # a dead peer fails fast: everything left goes to the outbox now
    for path in attempt.pending:
        reason = attempt.reasons.get(path, "not sent")
        result.failed[_to_outbox(path, outbox, destination=name, reason=reason)] = reason
    log.info("send to %s: %d stored, %d in the outbox", name, len(result.sent), len(result.failed))
    return result


_UNREACHABLE = "peer unreachable"


def _check_url(url: str) -> str:
    """``url`` without a trailing slash; raise unless it is http(s) with a host."""
    text = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", text):
        message = (
            f"--send-dicomweb {url!r}: expected an http(s) URL, such as https://pacs/dicom-web."
        )
        raise SendError(message)
    return text


def _leave_outbox(path: Path, outbox: Path) -> None:
    """Remove ``path`` (and its reason) from the outbox once it was stored from there."""
    try:
        inside = path.resolve().parent == outbox.resolve()
    except OSError:
        return
    if inside:
        path.unlink(missing_ok=True)
        path.with_name(path.name + REASON_SUFFIX).unlink(missing_ok=True)


def _to_outbox(path: Path, outbox: Path, *, destination: str, reason: str) -> Path:
    """Copy ``path`` into ``outbox`` (unless it is there) with ``<name>.reason.json``."""
    outbox.mkdir(parents=True, exist_ok=True)
    kept = outbox / path.name
    if not kept.exists() or kept.resolve() != path.resolve():
        tmp = outbox / f".{path.name}.tmp"
        shutil.copyfile(path, tmp)
        tmp.replace(kept)
    record = {
        "file": path.name,
        "destination": destination,
        "reason": reason,
        "failed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(kept.with_name(kept.name + REASON_SUFFIX), json.dumps(record, indent=2))
    return kept


def _file_context(path: Path) -> tuple[str, str]:
    """The SOP class and transfer syntax in ``path``'s file meta."""
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
        return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)
    except (OSError, InvalidDicomError, AttributeError) as err:
        message = f"{path.name} is not a DICOM file with file meta ({type(err).__name__})"
        raise SendError(message) from err


def _send_dimse(paths: list[Path], destination: DimseDestination) -> dict[Path, str]:
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
        outcome = _send_association(batch, {contexts[path] for path in batch}, destination)
        failed.update(outcome)
        if any(reason.startswith(_UNREACHABLE) for reason in outcome.values()):
            for rest in batches[index + 1 :]:  # the peer is down: do not knock again now
                failed.update(dict.fromkeys(rest, outcome[batch[0]]))
            break
    return failed


def _send_association(
    paths: list[Path], contexts: set[tuple[str, str]], destination: DimseDestination
) -> dict[Path, str]:
    """C-STORE ``paths`` over one association; the reason of each file not stored."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

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
    unreachable = _unreachable(destination)
    if unreachable:
        return dict.fromkeys(paths, unreachable)
    association = ae.associate(destination.host, destination.port, ae_title=destination.aet)
    if not association.is_established:
        why = "rejected" if association.is_rejected else "aborted"
        reason = f"association {why} by {destination} (no proposed context accepted?)"
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


def _unreachable(destination: DimseDestination) -> str:
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


def _name(uid: str) -> str:
    """A SOP class or transfer syntax by its name (never an instance UID)."""
    from pydicom.uid import UID

    return str(UID(uid).name)


def _dicomweb_client(url: str, token_file: Path | None) -> Any:
    """A dicomweb-client session for ``url``, with the credentials of
    :func:`usdcm.network.auth.dicomweb_client` (environment or file, never argv)."""
    from usdcm.network.auth import dicomweb_client

    client = dicomweb_client(url, token_file=token_file)
    # send_files owns the retries: dicomweb-client's own would retry a refused connection
    # five times over 30 s, so a dead service would not fail fast
    client.set_http_retry_params(retry=False)
    return client


def _send_stow(paths: list[Path], client: Any) -> dict[Path, str]:
    """STOW-RS each file; the reason of each file the service did not store."""
    import pydicom
    import requests

    failed: dict[Path, str] = {}
    for path in paths:
        try:
            dataset = pydicom.dcmread(path)
        except (OSError, pydicom.errors.InvalidDicomError) as err:
            failed[path] = f"not a DICOM file ({type(err).__name__})"
            continue
        try:
            response = client.store_instances(datasets=[dataset])
        except requests.exceptions.ConnectionError:
            reason = f"{_UNREACHABLE}: no connection to the STOW-RS service"
            return {**failed, **dict.fromkeys(paths[paths.index(path) :], reason)}
        except requests.exceptions.HTTPError as err:
            code = err.response.status_code if err.response is not None else "?"
            failed[path] = f"STOW-RS failed: HTTP {code}"
            continue
        except (requests.exceptions.RequestException, ValueError) as err:
            failed[path] = f"STOW-RS failed: {type(err).__name__}"
            continue
        refused = response.get("FailedSOPSequence") if response is not None else None
        if refused:  # an absent or empty FailedSOPSequence means every instance was stored
            reasons = sorted({f"0x{int(item.get('FailureReason', 0)):04X}" for item in refused})
            failed[path] = f"STOW-RS refused the instance: failure reason {', '.join(reasons)}"
    return failed
