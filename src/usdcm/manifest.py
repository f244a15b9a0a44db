"""Moved to :mod:`usdcm.artifacts.manifest` (the manifest is a typed, versioned artifact)."""

# shim: removed at integration
from usdcm.artifacts.manifest import (  # noqa: F401
    EXCLUDED_COLUMNS,
    MANIFEST_COLUMNS,
    REQUIRED_COLUMNS,
    SCHEMA_VERSION,
    ManifestRow,
    read_manifest,
    write_csv,
    write_excluded,
    write_manifest,
)

__all__ = [
    "EXCLUDED_COLUMNS",
    "MANIFEST_COLUMNS",
    "REQUIRED_COLUMNS",
    "SCHEMA_VERSION",
    "ManifestRow",
    "read_manifest",
    "write_csv",
    "write_excluded",
    "write_manifest",
]
