"""Schema versions of artifact files: one check, one message, for every artifact.

JSON artifacts carry ``"schema_version": N`` at the top level; CSV artifacts carry a
``schema_version`` column (the same value on every row, so that any CSV tool keeps it).
"""

from __future__ import annotations

from pathlib import Path

from usdcm.errors import SchemaVersionError

SCHEMA_KEY = "schema_version"
"""The JSON key, and the CSV column, that holds an artifact's schema version."""


def check_schema_version(
    found: object,
    expected: int,
    *,
    artifact: str,
    source: Path | str,
    fix: str,
    missing_ok: bool = False,
) -> None:
    """Raise :class:`SchemaVersionError` unless ``found`` is ``expected``.

    ``found`` is the raw value read from the file (``None`` or ``""`` when absent). A file
    without a version is accepted only when ``missing_ok`` (artifacts that users may write by
    hand, such as the manifest).

    >>> check_schema_version("2", 2, artifact="predictions", source="p.csv", fix="re-run")
    >>> check_schema_version("1", 2, artifact="predictions", source="p.csv", fix="re-run")
    Traceback (most recent call last):
    ...
    usdcm.errors.SchemaVersionError: p.csv is a predictions file of schema version 1; ...
    """
    if found is None or found == "":
        if missing_ok:
            return
        message = (
            f"{source} is a {artifact} file without a {SCHEMA_KEY} (written by an older usdcm); "
            f"this usdcm reads version {expected}: {fix}."
        )
        raise SchemaVersionError(message)
    try:
        version = int(str(found))
    except ValueError:
        version = None
    if version != expected:
        message = (
            f"{source} is a {artifact} file of schema version {found}; this usdcm reads "
            f"version {expected}: {fix}."
        )
        raise SchemaVersionError(message)
