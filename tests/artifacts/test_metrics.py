"""metrics.json: versioned; another version (or none) is refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from usdcm.artifacts.metrics import SCHEMA_VERSION, MetricsFile
from usdcm.errors import MetricsFileError, SchemaVersionError

VALUES = {"level": "study", "positive_class": "a", "n": 3, "threshold": {}, "provenance": {}}


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    MetricsFile(VALUES).write(path)
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert MetricsFile.read(path).values == VALUES


@pytest.mark.parametrize("version", [None, SCHEMA_VERSION + 1])
def test_another_version_is_refused(tmp_path: Path, version: int | None) -> None:
    path = tmp_path / "metrics.json"
    payload = dict(VALUES) if version is None else {"schema_version": version, **VALUES}
    path.write_text(json.dumps(payload))
    with pytest.raises(SchemaVersionError) as caught:
        MetricsFile.read(path)
    assert str(path) in str(caught.value) and "usdcm report" in str(caught.value)


def test_missing_keys_and_nan_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MetricsFileError, match="lack the keys"):
        MetricsFile({"level": "study"})
    with pytest.raises(ValueError, match="JSON compliant"):
        MetricsFile({**VALUES, "n": float("nan")}).write(tmp_path / "m.json")


def test_one_level_enum_from_the_cli_to_the_metrics() -> None:
    """The CLI's --level choices, the metrics code and metrics.json share one enum."""
    from usdcm.artifacts.metrics import Level
    from usdcm.cli import _report_options
    from usdcm.metrics import Level as MetricsLevel
    from usdcm.metrics import summarize

    assert _report_options.Level is Level
    assert MetricsLevel is Level
    rows = [
        {
            "image_id": f"i{n}",
            "patient_key": f"p{n}",
            "label": "a" if n % 2 else "b",
            "prob_a": str(n / 10),
            "prob_b": str(1 - n / 10),
        }
        for n in range(10)
    ]
    metrics = summarize(
        rows,
        level=Level.PATIENT,
        classes=["a", "b"],
        positive_class="a",
        threshold=0.5,
        threshold_rule="0.5",
        threshold_chosen_on="fixed in advance",
        exploratory=False,
        n_bootstrap=10,
    )
    assert metrics["level"] == Level.PATIENT.value
