"""Guard against deflate bombs: how large a Deflated Explicit VR data set inflates to.

pydicom inflates a deflated data set whole, in memory, before reading a single element,
even for a header-only read. A few kilobytes can inflate to gigabytes. This module owns
measuring the inflated size by streaming, in bounded memory, before pydicom sees the file.
It never parses more of the data set than the group 0002 file meta information.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import BinaryIO

from usdcm.errors import UnsupportedDicomError

DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
MAX_INFLATED_BYTES = 2 * 1024**3 + 64 * 1024**2
"""The largest inflated data set read: the default pixel limit of ingest plus headroom."""

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR"}
_LONG_VRS |= {b"UT", b"UV"}
_CHUNK = 1 << 20


def _meta_transfer_syntax(handle: BinaryIO) -> str | None:
    """Walk the group 0002 elements after ``DICM``; return the transfer syntax UID."""
    read = handle.read
    syntax: str | None = None
    while True:
        tag = read(4)
        if len(tag) < 4:
            return syntax
        group, element = struct.unpack("<HH", tag)
        if group != 0x0002:
            handle.seek(-4, 1)
            return syntax
        vr = read(2)
        if vr in _LONG_VRS:
            read(2)
            raw = read(4)
            length = struct.unpack("<I", raw)[0] if len(raw) == 4 else 0
        else:
            raw = read(2)
            length = struct.unpack("<H", raw)[0] if len(raw) == 2 else 0
        value = read(length)
        if element == 0x0010:
            syntax = value.rstrip(b"\0 ").decode("ascii", "replace")


def check_inflated_size(path: Path, limit: int | None = None) -> None:
    """Raise if ``path`` is a deflated data set that inflates to more than ``limit`` bytes.

    Does nothing for any other transfer syntax, or for a file without the Part 10 header
    (which cannot declare deflate). Memory stays within a few megabytes whatever the file.

    Raises
    ------
    UnsupportedDicomError
        The data set inflates beyond the limit, or its deflate stream is corrupt.
    """
    cap = MAX_INFLATED_BYTES if limit is None else limit
    with path.open("rb") as handle:
        head = handle.read(132)
        if len(head) < 132 or head[128:] != b"DICM":
            return
        if _meta_transfer_syntax(handle) != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            return
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        try:
            while chunk := handle.read(_CHUNK):
                data = chunk
                while data and total <= cap:
                    total += len(inflater.decompress(data, _CHUNK))
                    data = inflater.unconsumed_tail
                if total > cap:
                    break
        except zlib.error as err:
            message = f"the deflated data set is corrupt ({type(err).__name__})"
            raise UnsupportedDicomError(message) from err
    if total > cap:
        message = (
            f"the deflated data set inflates to more than {cap:,} bytes; refused before "
            "reading it (a deflate bomb, or an image larger than any limit of usdcm)"
        )
        raise UnsupportedDicomError(message)
