"""The ensemble of a cross-validated run: the mean of its folds, each with its own preprocessing."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.evaluation.conftest import Evaluated

from usdcm.artifacts.folds import FoldsFile
from usdcm.errors import RunError
from usdcm.inference.model import Ensemble, TrainedModel, load_trained_model
from usdcm.inference.predict import predict_items, predict_source
from usdcm.privacy import ProjectSecret


def _test_items(run: Evaluated, labels: dict[str, int]) -> list[dict[str, object]]:
    with run.predictions.open(encoding="utf-8") as handle:
        test_ids = {r["image_id"] for r in csv.DictReader(handle) if r["split"] == "test"}
    return [
        {
            "image": str(run.ingested.root / row["image_path"]),
            "label": labels[row["label"]],
            "image_id": row["image_id"],
        }
        for row in run.ingested.rows
        if row["image_id"] in test_ids
    ]


def test_the_ensemble_probability_is_the_mean_of_its_folds(folded_run: Evaluated) -> None:
    ensemble = load_trained_model(folded_run.run, "cpu")
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 2
    labels = {name: index for index, name in enumerate(ensemble.classes)}
    items = _test_items(folded_run, labels)
    counted: list[int] = []
    together = predict_items(ensemble, items, on_image=counted.append)
    assert sum(counted) == len(items)  # progress counts each image once

    folds = [load_trained_model(folded_run.run / f"fold-{k}", "cpu") for k in (1, 2)]
    assert all(isinstance(fold, TrainedModel) for fold in folds)
    alone = [predict_items(fold, items).probabilities for fold in folds]
    np.testing.assert_allclose(together.probabilities, (alone[0] + alone[1]) / 2, atol=1e-6)
    # the folds differ, so the mean is not either fold's answer
    assert np.abs(alone[0] - alone[1]).max() > 1e-4
    # each fold preprocesses with the statistics of its own training folds
    assert folds[0].stats != folds[1].stats


def test_predict_with_the_ensemble_equals_evaluate_with_it(folded_run: Evaluated) -> None:
    ensemble = load_trained_model(folded_run.run, "cpu")
    secret = ProjectSecret.load_or_create(folded_run.ingested.root / ".usdcm" / "secret")
    found = predict_source(ensemble, folded_run.ingested.export.root, secret=secret, workers=1)
    by_id = {row["image_id"]: row for row in found.rows}
    with folded_run.predictions.open(encoding="utf-8") as handle:
        tested = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    assert tested
    for row in tested:
        for name in ensemble.classes:
            assert by_id[row["image_id"]][f"prob_{name}"] == pytest.approx(
                float(row[f"prob_{name}"]), abs=1e-6
            )


def test_the_ensembles_identity_is_the_hash_of_its_members(folded_run: Evaluated) -> None:
    import hashlib

    ensemble = load_trained_model(folded_run.run, "cpu")
    assert isinstance(ensemble, Ensemble)
    joined = "\n".join(member.checkpoint_sha256 for member in ensemble.members)
    assert ensemble.checkpoint_sha256 == hashlib.sha256(joined.encode()).hexdigest()
    assert ensemble.payload["epoch"] is None
    assert ensemble.payload["val_auc"] == FoldsFile.read(folded_run.run / "folds.json").oof_auc


def test_an_unfinished_or_replaced_fold_is_refused(folded_run: Evaluated, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(folded_run.run, run)
    record = FoldsFile.read(run / "folds.json")
    record.with_fold(type(record.folds[1])(2)).write(run / "folds.json")
    with pytest.raises(RunError, match=r"unfinished folds \[2\].*--folds 2 --resume"):
        load_trained_model(run, "cpu")

    record.write(run / "folds.json")
    shutil.copy(run / "fold-1" / "best.pt", run / "fold-2" / "best.pt")
    with pytest.raises(RunError, match="fold-2.best.pt is not the checkpoint"):
        load_trained_model(run, "cpu")
