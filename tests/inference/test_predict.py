from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from tests.evaluation.conftest import Evaluated

from usdcm.inference.model import RunError, load_trained_model
from usdcm.inference.predict import predict_source
from usdcm.privacy import ProjectSecret
from usdcm.training.checkpoint import CheckpointError


def test_predict_on_the_raw_export_matches_evaluate(evaluated_run: Evaluated) -> None:
    export = evaluated_run.ingested.export
    trained = load_trained_model(evaluated_run.run, "cpu")
    secret = ProjectSecret.load_or_create(evaluated_run.ingested.root / ".usdcm" / "secret")
    found = predict_source(trained, export.root, secret=secret, chunk=5)

    n_files = sum(1 for p in export.root.rglob("*") if p.is_file())
    assert len(found.rows) + len(found.excluded) == n_files
    assert len(found.rows) == len(evaluated_run.ingested.rows)

    with evaluated_run.predictions.open(encoding="utf-8") as handle:
        evaluated = {r["image_id"]: r for r in csv.DictReader(handle)}
    by_id = {r["image_id"]: r for r in found.rows}
    assert evaluated and set(evaluated) <= set(by_id)
    for image_id, row in evaluated.items():
        for name in trained.classes:
            assert by_id[image_id][f"prob_{name}"] == pytest.approx(
                float(row[f"prob_{name}"]), abs=1e-5
            )
    text = repr(found.rows) + repr(found.excluded)
    for phi in export.phi:
        assert phi not in text


def test_a_folder_without_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="No checkpoint"):
        load_trained_model(tmp_path, "cpu")


class _Payload:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def test_a_checkpoint_carrying_code_is_refused_and_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    crafted = tmp_path / "best.pt"
    torch.save({"model_state": _Payload()}, crafted)
    with pytest.raises(CheckpointError, match="nothing in it was executed"):
        load_trained_model(tmp_path, "cpu")
    assert not (tmp_path / "PWNED").exists()
