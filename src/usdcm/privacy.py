"""Keyed pseudonyms for patient identifiers.

Owns the per-project secret and the HMAC that turns a PatientID (or any identifying key)
into a stable pseudonym. The secret is created on first use, stored with mode 0600, and
never printed; nothing here logs an identifier.
"""

from __future__ import annotations

import hashlib
import hmac
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
        message = f"{namespace}\x00{value.strip()}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return digest[:PSEUDONYM_HEX_CHARS]
