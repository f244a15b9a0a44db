"""File digests: the hex SHA-256 of a file's bytes, read in chunks.

Owns the one loop that fingerprints a file (a manifest, a checkpoint, predictions, packaged
weights, an outbox entry); never decides what a digest means or wraps the reader's errors:
each caller names its own failure.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of the bytes of ``path``, read ``chunk_bytes`` at a time.

    Parameters
    ----------
    path : Path
        The file to read.
    chunk_bytes : int
        How much to read at once; the digest does not depend on it.

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    OSError
        ``path`` cannot be read (missing, a folder, no permission), unchanged, with
        ``filename`` naming it.
    ValueError
        ``chunk_bytes`` is below 1 (a read of 0 bytes would end the loop at once and give
        the digest of an empty file).

    Examples
    --------
    ``sha256_file(Path("runs/r1/manifest.csv"))`` gives the same value as
    ``hashlib.sha256(Path("runs/r1/manifest.csv").read_bytes()).hexdigest()``, without
    holding the whole file in memory.
    """
    if chunk_bytes < 1:
        message = f"chunk_bytes must be at least 1, not {chunk_bytes}; pass a positive size."
        raise ValueError(message)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
