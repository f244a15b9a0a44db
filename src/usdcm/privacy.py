"""Keyed pseudonyms for patient identifiers.

Owns the per-project secret and the HMAC that turns a PatientID (or any identifying key)
into a stable pseudonym. The secret is created on first use, stored with mode 0600, and
never printed; nothing here logs an identifier.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from usdcm.atomic import atomic_write_bytes
from usdcm.errors import UsdcmError

SECRET_BYTES = 32
PSEUDONYM_HEX_CHARS = 24


class ProjectSecret:
    """The HMAC key that makes pseudonyms stable within a project and useless outside it.

    Examples
    --------
    >>> key = ProjectSecret(b"0" * 32)
    >>> key.pseudonym("PAT-0001") == key.pseudonym("PAT-0001")
    True
    >>> len(key.pseudonym("PAT-0001"))
    24
    >>> "PAT" in repr(key)
    False
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            message = f"A project secret needs at least 16 bytes, found {len(key)}."
            raise UsdcmError(message)
        self._key = key

    def __repr__(self) -> str:
        return "ProjectSecret(<hidden>)"

    def to_bytes(self) -> bytes:
        """The key itself, to hand to worker processes; never print or store it elsewhere."""
        return self._key

    @classmethod
    def load_or_create(cls, path: Path) -> ProjectSecret:
        """Read the secret at ``path``, or create a new random one there (mode 0600)."""
        if path.exists():
            try:
                key = bytes.fromhex(path.read_text(encoding="ascii").strip())
            except (OSError, ValueError) as err:
                message = (
                    f"The project secret at {path} is unreadable; restore it from a backup "
                    "or delete it to start a new project (all pseudonyms will change)."
                )
                raise UsdcmError(message) from err
            return cls(key)
        key = secrets.token_bytes(SECRET_BYTES)
        atomic_write_bytes(path, key.hex().encode("ascii") + b"\n", mode=0o600)
        return cls(key)

    def pseudonym(self, value: str, *, namespace: str = "patient") -> str:
        """Return the keyed pseudonym of ``value`` (hex, 24 characters).

        ``namespace`` separates kinds of keys, so that a PatientID and an AccessionNumber
        with the same text never share a pseudonym.
        """
        text = f"{namespace}\x00{value.strip()}"
        message = text.encode("utf-8", "surrogateescape")  # file names need not be UTF-8
        digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return digest[:PSEUDONYM_HEX_CHARS]


_WORD_SPLIT = re.compile(r"[^0-9A-Za-z]+")


def phi_tokens(
    *, patient_id: str, accession_number: str, patient_name: str, birth_date: str
) -> set[str]:
    """The words of a header's identifiers that must never appear in an output path.

    Examples
    --------
    >>> sorted(phi_tokens(patient_id="SYN001", accession_number="", patient_name="DOE^JANE",
    ...                   birth_date="19700101"))
    ['19700101', 'DOE', 'JANE', 'SYN001']
    """
    tokens = {patient_id.strip(), accession_number.strip(), birth_date.strip()}
    tokens.update(_WORD_SPLIT.split(patient_name))
    return {token.upper() for token in tokens if len(token) >= 2}


class PathRedactor:
    """Replaces path components that contain a known identifier by a keyed stand-in.

    Exports sometimes name folders after patients (``DOE_JANE_123/``). The redactor keeps
    only HMACs of identifier words, so it can be saved in the ingest journal without
    storing an identifier, and still recognise them in later runs.

    Examples
    --------
    >>> secret = ProjectSecret(b"k" * 32)
    >>> redactor = PathRedactor(secret)
    >>> redactor.add({"DOE", "SYN001"})
    >>> redactor.redact("exports/Doe_Jane/IM1").startswith("exports/redacted-")
    True
    >>> redactor.redact("exports/PT0001/IM1")
    'exports/PT0001/IM1'
    """

    def __init__(self, secret: ProjectSecret, hashed: set[str] | None = None) -> None:
        self._secret = secret
        self.hashed: set[str] = set(hashed or ())

    def _hash(self, word: str) -> str:
        return self._secret.pseudonym(word.upper(), namespace="phi-word")

    def add(self, tokens: set[str]) -> None:
        """Remember identifier words (kept only as HMACs)."""
        self.hashed.update(self._hash(token) for token in tokens)

    def hashes_of(self, tokens: set[str]) -> list[str]:
        """The HMACs of ``tokens``, to store in place of the identifiers."""
        return sorted(self._hash(token) for token in tokens)

    def _is_identifying(self, component: str) -> bool:
        words = [component, *_WORD_SPLIT.split(component)]
        return any(len(word) >= 2 and self._hash(word) in self.hashed for word in words)

    def redact(self, relative_path: str) -> str:
        """Return ``relative_path`` (POSIX) with identifying components replaced."""
        if not self.hashed:
            return relative_path
        parts = relative_path.split("/")
        safe = [
            f"redacted-{self._secret.pseudonym(part, namespace='path')[:8]}"
            if self._is_identifying(part)
            else part
            for part in parts
        ]
        return "/".join(safe)
