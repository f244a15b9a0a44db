"""usdcm.digest: a file's SHA-256 read in chunks is hashlib's over the whole bytes; a file
that cannot be read raises the reader's OSError, naming it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from usdcm.digest import sha256_file


def test_matches_hashlib_across_chunk_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * 4096 + 17)  # three full chunks of 4096 and a partial one
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk_bytes=4096) == expected
    assert sha256_file(path, chunk_bytes=1) == expected
    assert sha256_file(path) == expected  # one default chunk holds it all


def test_a_file_larger_than_the_default_chunk(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom((1 << 20) + 5)
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()
    assert sha256_file(path) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_a_missing_file_raises_file_not_found_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    with pytest.raises(FileNotFoundError) as caught:
        sha256_file(missing)
    assert caught.value.filename == str(missing)


def test_a_chunk_below_one_byte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"not empty")
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"chunk_bytes must be at least 1, not {bad}"):
            sha256_file(path, chunk_bytes=bad)
