"""Trained runs on the ingested synthetic export, shared by the evaluation tests: a plain one
and a cross-validated one (2 folds, trained through ``usdcm train --folds 2``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.conftest import Ingested
from tests.training.conftest import tiny_config
from typer.testing import CliRunner

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


@pytest.fixture(scope="session")
def folded_run(ingested_export: Ingested, tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    """``usdcm train --folds 2`` (2 epochs of the seed CNN at 32 px), then its test split
    evaluated with the ensemble of the two folds."""
    from usdcm.cli.app import app

    base = tmp_path_factory.mktemp("folded")
    run = base / "run"
    config = base / "tiny.yaml"
    tiny = tiny_config(data={"image_size": [32, 32], "eval_frames": 3}, optim={"epochs": 2})
    config.write_text(yaml.safe_dump(tiny.to_dict()))
    manifest = ingested_export.root / "manifest.csv"
    args = ["train", str(manifest), "--config", str(config), "--out", str(run), "--folds", "2"]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "out-of-fold AUC" in result.output and "fold 2: best validation AUC" in result.output
    predictions, _ = evaluate_run(run, base / "eval", device="cpu")
    return Evaluated(ingested_export, run, base / "eval", predictions)
