"""Step 1 of ingest: walk the export and read each file's header (never its pixels).

Symbolic links to files are followed; links to folders are listed but never followed (no
loops, no file reached twice). FIFOs, sockets and devices are never opened. Runs in worker
processes, each task carrying the project secret (there is no module-level secret). Returns
plain JSON-ready records (what the journal stores): the
:class:`~usdcm.artifacts.instance.InstanceHeader` with its patient pseudonym, hashed join
keys and hashed identifier words, and never an identifier; :func:`scan_outcome` turns one
back into the header (or the exclusion) that selection takes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from usdcm.artifacts.instance import InstanceHeader
from usdcm.dicom.header import read_header
from usdcm.errors import NotDicomError, UnsupportedDicomError
from usdcm.ingest.labels import JOIN_KEYWORDS, join_hash
from usdcm.ingest.select import Exclusion
from usdcm.parallel import DEFAULT_FILE_TIMEOUT_S, DaskCluster, map_files
from usdcm.privacy import PathRedactor, ProjectSecret, phi_tokens

USDCM_STATE_DIR = ".usdcm"
"""The folder where usdcm keeps its own state beside data (ingest's output, listen's store)."""


def walk_files(source: Path, skip: Path | None = None) -> Iterator[str]:
    """Yield the path, relative to ``source``, of every entry under ``source`` that ingest
    must account for, in walk order.

    That is every file (by content, whatever its name), every symbolic link and every folder
    that cannot be listed: :func:`check_file` then says which of them can be read. Each path
    is a POSIX ``str`` (``"PT1/ST1/IM1"``, a name that is not UTF-8 kept with its surrogate
    escapes, as :func:`os.fsdecode` gives it): no :class:`~pathlib.Path` is built per entry,
    so the walk of a large export holds only the folder it is listing.

    The order: a folder's files and links (to files or folders) sorted by name, then each of
    its subfolders sorted by name, depth first; a subfolder that cannot be listed is yielded
    in its place, itself. Symbolic links to folders are yielded but never followed, so a link
    loop cannot recurse and no file is reached twice through a linked folder. ``skip`` (the
    output folder when it lies inside ``source``) is left out, and so is ``source/.usdcm``:
    the state of usdcm itself (the secret, and what ``usdcm listen`` or ``usdcm pull`` keep
    beside a store they fill), never an input. A ``source`` that cannot be listed yields
    nothing.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     root = Path(folder)
    ...     (root / "PT1" / "ST1").mkdir(parents=True)
    ...     for name in ("PT1/ST1/IM1", "PT1/z-note", "DICOMDIR"):
    ...         _ = (root / name).write_bytes(b"")
    ...     (root / "PT1" / "a-link").symlink_to("ST1", target_is_directory=True)
    ...     list(walk_files(root))
    ['DICOMDIR', 'PT1/a-link', 'PT1/z-note', 'PT1/ST1/IM1']
    """
    skip_relative = (
        skip.relative_to(source).as_posix()
        if skip is not None and skip.is_relative_to(source)
        else None
    )
    # folders still to list, as (relative, absolute) paths, the next one last
    pending: list[tuple[str, str]] = [("", os.fspath(source))]
    while pending:
        relative, folder = pending.pop()
        prefix = f"{relative}/" if relative else ""
        names: list[str] = []
        subfolders: list[str] = []
        try:
            with os.scandir(folder) as entries:  # os.scandir looked up here: tests replace it
                for entry in entries:
                    if not _is_folder(entry):
                        names.append(entry.name)  # a file, a link to one, a broken link
                    elif _is_link(entry):
                        names.append(entry.name)  # listed, never followed
                    elif not (
                        prefix + entry.name == skip_relative
                        or (not relative and entry.name == USDCM_STATE_DIR)
                    ):
                        subfolders.append(entry.name)
        except OSError:
            if relative:
                yield relative  # check_file says why it cannot be listed
            continue
        names.sort()
        for name in names:
            yield prefix + name
        subfolders.sort(reverse=True)
        pending.extend((prefix + name, os.path.join(folder, name)) for name in subfolders)


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a folder or a link to one (``False`` when that cannot be told)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_link(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a symbolic link (``False`` when that cannot be told)."""
    try:
        return entry.is_symlink()
    except OSError:
        return False


def check_file(
    path: str | os.PathLike[str],
) -> tuple[os.stat_result | None, dict[str, Any] | None]:
    """Return ``(stat, None)`` for a regular file that can be read, else ``(None, exclusion)``.

    Symbolic links to files are followed: the stat is the target's. A link to a folder, a
    broken link and a link loop are excluded with code ``symlink``; a FIFO, socket or device
    (opening a FIFO would block forever) and a folder that cannot be listed with code
    ``unreadable``. Never opens the file.
    """
    try:
        link = os.lstat(path)
    except OSError as err:
        return None, excluded("unreadable", f"cannot stat file ({_error_name(err)})")
    is_link = stat.S_ISLNK(link.st_mode)
    try:
        info = os.stat(path) if is_link else link
    except OSError as err:
        if err.errno == errno.ELOOP:
            reason = "symbolic link loop: the link never reaches a file; not followed"
        elif err.errno == errno.ENOENT:
            reason = "broken symbolic link: its target does not exist"
        else:
            reason = f"symbolic link whose target cannot be reached ({_error_name(err)})"
        return None, excluded("symlink", reason)
    if stat.S_ISREG(info.st_mode):
        return info, None
    if stat.S_ISDIR(info.st_mode):
        if is_link:
            reason = "symbolic link to a folder: folder links are not followed (no loops)"
            return None, excluded("symlink", reason)
        try:
            with os.scandir(path):
                pass
        except OSError as err:
            reason = f"folder cannot be listed ({_error_name(err)}); its files were not seen"
        else:
            reason = "folder could not be listed during the walk; its files were not seen"
        return None, excluded("unreadable", reason)
    kind = _SPECIAL_KINDS.get(stat.S_IFMT(info.st_mode), "special file")
    return None, excluded("unreadable", f"not a regular file ({kind}); not read")


_SPECIAL_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def _error_name(err: OSError) -> str:
    """``PermissionError``, or the errno name for a plain ``OSError`` (``ELOOP``)."""
    name = type(err).__name__
    if name == "OSError" and err.errno is not None:
        return errno.errorcode.get(err.errno, name)
    return name


def excluded(code: str, reason: str) -> dict[str, Any]:
    """An exclusion record: a reason code and a reason in words."""
    return {"status": "excluded", "code": code, "reason": reason}


def scan_file(path: Path, secret: ProjectSecret) -> dict[str, Any]:
    """Read the header of one file and return its scan record (see module docstring).

    ``secret`` keys the patient pseudonym, the join hashes and the identifier-word hashes;
    it is passed in, never taken from the process (no global to forget to set).
    """
    if not isinstance(secret, ProjectSecret):
        message = (
            f"scan_file needs the project secret (a ProjectSecret), not {type(secret).__name__}; "
            "load it with ProjectSecret.load_or_create()"
        )
        raise TypeError(message)
    _, problem = check_file(path)
    if problem is not None:
        return problem
    try:
        header = read_header(path)
    except NotDicomError as err:
        return excluded("not_dicom", str(err))
    except UnsupportedDicomError as err:
        return excluded("unreadable", str(err))
    except OSError as err:
        return excluded("unreadable", f"cannot read file ({_error_name(err)})")
    instance, who = header.instance, header.identifiers
    patient_key = (
        secret.pseudonym(who.patient_id)
        if who.patient_id
        else secret.pseudonym(instance.study_instance_uid, namespace="patient-from-study")
    )
    join_values = {
        "PatientID": who.patient_id,
        "AccessionNumber": who.accession_number,
        "StudyInstanceUID": instance.study_instance_uid,
        "SeriesInstanceUID": instance.series_instance_uid,
        "SOPInstanceUID": instance.sop_instance_uid,
    }
    tokens = phi_tokens(
        patient_id=who.patient_id,
        accession_number=who.accession_number,
        patient_name=who.patient_name,
        birth_date=who.birth_date,
    )
    return {
        "status": "dicom",
        **replace(instance, patient_key=patient_key).to_record(),
        "join": {
            keyword: join_hash(secret, keyword, join_values[keyword])
            for keyword in JOIN_KEYWORDS
            if join_values[keyword]
        },
        "phi": PathRedactor(secret).hashes_of(tokens),
    }


def scan_outcome(record: dict[str, Any]) -> InstanceHeader | Exclusion:
    """The :class:`InstanceHeader` of a scan record, or the file's :class:`Exclusion`."""
    if record.get("status") == "dicom":
        return InstanceHeader.from_record(record)
    return Exclusion(str(record["code"]), str(record["reason"]))


HEADER_BATCH_SIZE = 32
"""Files per worker task in the header scan: headers are small and quick to read."""
HEADER_TIMEOUT_S = DEFAULT_FILE_TIMEOUT_S
"""Seconds one header may take to read before the file is excluded with code ``timeout``."""

PathT = TypeVar("PathT", str, Path)


def header_crashed(_path: object) -> dict[str, Any]:
    """The exclusion of a file whose header reader killed its worker process."""
    return excluded("unreadable", "header reader crashed")


def header_timed_out(_path: object) -> dict[str, Any]:
    """The exclusion of a file whose header took longer than :data:`HEADER_TIMEOUT_S`."""
    return excluded("timeout", f"reading the header took over {HEADER_TIMEOUT_S:g} s")


@dataclass(frozen=True)
class HeaderScan:
    """What the header-scan pool maps: :func:`scan_file` with its secret bound.

    Picklable, so each worker task carries the secret with it: a worker never depends on
    an initializer having run, and nothing checks for one with an ``assert``.
    """

    secret: ProjectSecret

    def __call__(self, path: str | Path) -> dict[str, Any]:
        return scan_file(Path(path), self.secret)


def scan_headers(
    paths: Sequence[PathT],
    secret: ProjectSecret,
    *,
    workers: int,
    cluster: DaskCluster | None = None,
) -> Iterator[tuple[PathT, dict[str, Any]]]:
    """Yield ``(path, scan record)`` for every path, in completion order.

    The one header scan of ``usdcm ingest`` and ``usdcm predict``: the same batch size,
    time limit, and crash and timeout exclusions for both. ``workers <= 1`` scans in this
    process; with a ``cluster`` (:func:`usdcm.parallel.open_scheduler`) on its Dask workers.
    """
    return map_files(
        HeaderScan(secret),
        paths,
        workers=workers,
        batch_size=HEADER_BATCH_SIZE,
        on_crash=header_crashed,
        on_timeout=header_timed_out,
        timeout_s=HEADER_TIMEOUT_S,
        cluster=cluster,
    )
