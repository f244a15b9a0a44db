"""Moved to :mod:`usdcm.parallel` (the pool is not ingest's alone: predict uses it too)."""

# shim: removed at integration
from usdcm.parallel import (  # noqa: F401
    DEFAULT_FILE_TIMEOUT_S,
    HARD_KILL_GRACE_S,
    FileTimeout,
    map_files,
    time_limit,
)

__all__ = ["DEFAULT_FILE_TIMEOUT_S", "HARD_KILL_GRACE_S", "FileTimeout", "map_files", "time_limit"]
