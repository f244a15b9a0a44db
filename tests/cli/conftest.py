"""Share the synthetic export fixture of the ingest tests with the CLI tests."""

from tests.ingest.conftest import synth_export

__all__ = ["synth_export"]
