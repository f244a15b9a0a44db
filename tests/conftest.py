"""Fixtures shared across the test tree.

``synth_mix`` is a small synthetic export that holds every storage recipe at least once; it
is written once per session and must be treated as read-only.
"""

from __future__ import annotations

import pytest

from usdcm.synth import ExportSummary, write_export


@pytest.fixture(scope="session")
def synth_mix(tmp_path_factory: pytest.TempPathFactory) -> ExportSummary:
    """A 5-patient synthetic export (seed 0) covering every recipe, junk kind and region kind."""
    return write_export(tmp_path_factory.mktemp("synth-mix") / "export", patients=5, seed=0)
