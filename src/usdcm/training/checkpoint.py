"""Shim: checkpoint read/write moved to :mod:`usdcm.runtime.checkpoint`."""

# shim: removed at integration
from usdcm.runtime.checkpoint import (  # noqa: F401
    REQUIRED_KEYS,
    VERSIONED_PACKAGES,
    CheckpointError,
    load_checkpoint,
    package_versions,
    save_checkpoint,
    sha256_file,
    unwrap_model,
)

__all__ = [
    "CheckpointError",
    "REQUIRED_KEYS",
    "VERSIONED_PACKAGES",
    "load_checkpoint",
    "package_versions",
    "save_checkpoint",
    "sha256_file",
    "unwrap_model",
]
