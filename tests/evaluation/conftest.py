"""A trained run on the ingested synthetic export, shared by the evaluation tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import Ingested
from tests.training.conftest import tiny_config

from usdcm.evaluation.evaluate import evaluate_run
from usdcm.training.run import train


@dataclass(frozen=True)
class Evaluated:
    """A run trained on ``ingested_export`` and its evaluation folder (read-only)."""

    ingested: Ingested
    run: Path
    eval_dir: Path
    predictions: Path


@pytest.fixture(scope="session")
def evaluated_run(ingested_export: Ingested, tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    """Two epochs of the seed CNN on the 6-patient export, then its test split predicted."""
    base = tmp_path_factory.mktemp("evaluated")
    run = base / "run"
    config = tiny_config(data={"image_size": [32, 32], "eval_frames": 3}, optim={"epochs": 2})
    train(ingested_export.root / "manifest.csv", config, run)
    predictions, _ = evaluate_run(run, base / "eval", device="cpu")
    return Evaluated(ingested_export, run, base / "eval", predictions)
