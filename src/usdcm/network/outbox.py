"""The outbox: files that could not be sent, each kept beside ``<name>.reason.json``.

Owns the outbox folder's format and nothing else: which files are entries (a file is an
entry when its reason file sits beside it), the reason record (destination, last error,
attempts, times), keeping a file (a copy, never a move of the caller's file) and letting an
entry go once the peer confirmed it. Sending is :mod:`usdcm.network.send`.

A reason names the destination (``AET@host:port`` or a DICOMweb URL, never a credential),
the error, and the file's name (usdcm's own names are keyed hashes); never a UID or a
patient attribute.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from usdcm.atomic import atomic_copy, atomic_write_text, sync_folder
from usdcm.digest import sha256_file
from usdcm.network.store import same_content

REASON_SUFFIX = ".reason.json"
SCHEMA_VERSION = 1
"""Of the reason file; a file without ``schema_version`` (before it was recorded) reads as 1."""


@dataclass(frozen=True)
class Reason:
    """Why an outbox entry is there: where it was going, the last error, how often it failed.

    ``attempts`` counts every try (each retry too) over every send of the file; ``tls`` is
    True when the DIMSE destination was reached over TLS (a resend never falls back to plain).
    """

    file: str
    destination: str
    reason: str
    attempts: int
    first_failed_at: str
    failed_at: str
    tls: bool = False
    schema_version: int = SCHEMA_VERSION


def reason_path(path: Path) -> Path:
    """``path``'s reason file: ``<name>.reason.json`` beside it.

    >>> reason_path(Path("outbox/abc.sr.dcm")).as_posix()
    'outbox/abc.sr.dcm.reason.json'
    """
    return path.with_name(path.name + REASON_SUFFIX)


def read_reason(path: Path) -> Reason | None:
    """The reason recorded for the outbox entry ``path``; None when there is none or it is
    not a reason file usdcm wrote (a damaged reason does not stop a resend)."""
    try:
        record = json.loads(reason_path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("destination"), str):
        return None
    failed_at = str(record.get("failed_at", ""))
    try:
        attempts = max(int(record.get("attempts", 1)), 0)
    except (TypeError, ValueError):
        attempts = 1
    return Reason(
        file=str(record.get("file", path.name)),
        destination=record["destination"],
        reason=str(record.get("reason", "")),
        attempts=attempts,
        first_failed_at=str(record.get("first_failed_at", failed_at)),
        failed_at=failed_at,
        tls=bool(record.get("tls", False)),
    )


def is_entry(path: Path) -> bool:
    """Whether ``path`` is an outbox entry: a file with its reason file beside it."""
    return path.is_file() and reason_path(path).is_file()


def entries(outbox: Path) -> list[Path]:
    """The outbox's entries, sorted by name (temp files and orphan reasons left out)."""
    if not outbox.is_dir():
        return []
    found = []
    for reason in outbox.glob("*" + REASON_SUFFIX):
        entry = reason.with_name(reason.name.removesuffix(REASON_SUFFIX))
        if not entry.name.startswith(".") and entry.is_file():
            found.append(entry)
    return sorted(found)


def _same_bytes(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return same_content(a, b)
    return False


def _inside(path: Path, outbox: Path) -> bool:
    try:
        return path.resolve().parent == outbox.resolve()
    except OSError:
        return False


def keep(
    path: Path, outbox: Path, *, destination: str, reason: str, attempts: int, tls: bool = False
) -> Path:
    """Keep ``path`` in ``outbox`` with its reason; the entry's path.

    A file already in the outbox has its reason updated in place (attempts added to the
    earlier count). Any other file is copied in; an entry of the same name and the same
    bytes (the same file failing again) is updated, one with other bytes is not overwritten:
    the copy takes a name with its content hash.

    Once this returns, the copy and its reason are on disk (both files and their names
    synced), so a power loss does not lose an entry or leave it empty.
    """
    outbox.mkdir(parents=True, exist_ok=True)
    kept = outbox / path.name
    if not _inside(path, outbox) and kept.exists() and not _same_bytes(path, kept):
        kept = outbox / f"{path.name}.{sha256_file(path)[:12]}"
    if not _inside(path, outbox) and not (kept.exists() and _same_bytes(path, kept)):
        atomic_copy(path, kept)
    earlier = read_reason(kept)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = Reason(
        file=kept.name,
        destination=destination,
        reason=reason,
        attempts=(earlier.attempts if earlier else 0) + attempts,
        first_failed_at=earlier.first_failed_at if earlier and earlier.first_failed_at else now,
        failed_at=now,
        tls=tls,
    )
    atomic_write_text(reason_path(kept), json.dumps(asdict(record), indent=2))
    sync_folder(outbox)  # the reason's name: without it the copy is not an entry
    return kept


def leave(path: Path, outbox: Path) -> bool:
    """Let ``path`` go from the outbox once the peer confirmed it; True when an entry went.

    ``path`` itself goes when it is an entry of ``outbox``; a file sent from elsewhere clears
    an entry of the same name and the same bytes (an earlier failed send of it). A file
    without a reason file is never removed: it was not the outbox's to remove.
    """
    if _inside(path, outbox):
        entry = path
    else:
        entry = outbox / path.name
        if not (entry.is_file() and _same_bytes(path, entry)):
            return False
    if not reason_path(entry).is_file():
        return False
    entry.unlink(missing_ok=True)
    reason_path(entry).unlink(missing_ok=True)
    return True
