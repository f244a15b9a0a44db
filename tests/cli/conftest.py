"""Share fixtures of the ingest and evaluation tests with the CLI tests."""

from tests.evaluation.conftest import evaluated_run
from tests.ingest.conftest import synth_export

__all__ = ["evaluated_run", "synth_export"]
