"""Cross-validated runs: one normal run per fold, out-of-fold predictions, per-fold resume."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from tests.training.conftest import TinyManifest, tiny_config

from usdcm.artifacts.folds import FoldRecord, FoldsFile
from usdcm.artifacts.manifest import read_manifest
from usdcm.artifacts.predictions import read_predictions
from usdcm.artifacts.splits import read_splits_file
from usdcm.errors import TrainingError
from usdcm.runtime.checkpoint import load_checkpoint
from usdcm.training import run as run_module
from usdcm.training.folds import train_folds

FOLDS = {"folds": 2}
QUICK = {"epochs": 2}


def test_each_fold_is_a_run_and_oof_covers_every_non_test_image_once(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest()
    run = tmp_path / "run"
    result = train_folds(manifest, tiny_config(split=FOLDS, optim=QUICK), run)

    assert sorted(result.results) == [1, 2]
    for fold in (1, 2):
        assert {"best.pt", "last.pt", "metrics.jsonl", "splits.csv"} <= {
            p.name for p in (run / f"fold-{fold}").iterdir()
        }
    top = read_splits_file(run / "splits.csv")
    fold_of = {row.image_id: row.fold for row in top}
    test_ids = {row.image_id for row in top if row.split == "test"}
    # the test split is held out as in a plain run: the manifest's own test column here
    given = {row["image_id"] for row in read_manifest(manifest) if row["split"] == "test"}
    assert test_ids == given and all(fold_of[i] == 0 for i in test_ids)
    assert Counter(fold_of[i] for i in fold_of if i not in test_ids) == {1: 12, 2: 12}

    for fold in (1, 2):
        # fold k validates on fold k, trains on the others, tests on the test split
        per_fold = {
            row.image_id: row.split for row in read_splits_file(run / f"fold-{fold}" / "splits.csv")
        }
        assert {i for i, s in per_fold.items() if s == "val"} == {
            i for i, f in fold_of.items() if f == fold
        }
        assert {i for i, s in per_fold.items() if s == "test"} == test_ids

    rows, classes = read_predictions(run / "oof_predictions.csv")
    assert classes == ["abnormal", "normal"]
    ids = [row["image_id"] for row in rows]
    assert len(ids) == len(set(ids)) == 24
    assert set(ids) == set(fold_of) - test_ids
    assert {row["split"] for row in rows} == {"oof"}
    # each row is its fold's best-epoch validation prediction, recorded in best.pt
    for fold in (1, 2):
        recorded = load_checkpoint(run / f"fold-{fold}" / "best.pt")["val_predictions"]
        by_id = {row["image_id"]: row for row in rows}
        for image_id, probs in zip(recorded["image_ids"], recorded["probabilities"], strict=True):
            assert fold_of[image_id] == fold
            assert float(by_id[image_id]["prob_abnormal"]) == pytest.approx(probs[0], abs=1e-7)

    record = FoldsFile.read(run / "folds.json")
    assert record.complete and record.k == 2
    assert [r.val_auc for r in record.folds] == [result.results[f].best_auc for f in (1, 2)]
    assert record.oof_auc is not None and 0.0 <= record.oof_auc <= 1.0
    assert "pat0" not in (run / "folds.json").read_text()  # counts and hashes only


class _Killed(Exception):
    pass


def test_a_killed_cross_validated_run_resumes_only_the_unfinished_fold(
    tiny_manifest: TinyManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tiny_manifest()
    config = tiny_config(split=FOLDS, optim=QUICK)
    run = tmp_path / "run"
    real_train = run_module.train
    trained: list[str] = []

    def kill_fold_2(*args: object, **kwargs: object) -> object:
        folder = Path(str(args[2]))
        trained.append(f"{folder.name} resume={kwargs['resume']}")
        if folder.name == "fold-2":
            kwargs["on_epoch"] = _raise_after_first_epoch
        return real_train(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("usdcm.training.folds.train", kill_fold_2)
    with pytest.raises(_Killed):
        train_folds(manifest, config, run)
    record = FoldsFile.read(run / "folds.json")
    assert [r.status for r in record.folds] == ["done", "pending"]
    assert not (run / "oof_predictions.csv").exists()
    fold_1 = (run / "fold-1" / "best.pt").read_bytes()

    trained.clear()
    monkeypatch.setattr("usdcm.training.folds.train", _recording(real_train, trained))
    result = train_folds(manifest, config, run, resume=True)

    assert trained == ["fold-2 resume=True"]  # fold 1 is skipped, fold 2 continues
    assert (run / "fold-1" / "best.pt").read_bytes() == fold_1
    epochs = [json.loads(line)["epoch"] for line in (run / "fold-2" / "metrics.jsonl").open()]
    assert epochs == [0, 1]
    assert result.record.complete
    rows, _ = read_predictions(run / "oof_predictions.csv")
    assert len(rows) == 24


def _raise_after_first_epoch(record: object) -> None:
    raise _Killed


def _recording(real_train: object, trained: list[str]) -> object:
    def wrapped(*args: object, **kwargs: object) -> object:
        trained.append(f"{Path(str(args[2])).name} resume={kwargs['resume']}")
        return real_train(*args, **kwargs)  # type: ignore[operator]

    return wrapped


def test_resume_refuses_another_fold_count_or_a_missing_folds_file(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest()
    with pytest.raises(TrainingError, match="--resume needs"):
        train_folds(manifest, tiny_config(split=FOLDS), tmp_path / "none", resume=True)
    run = tmp_path / "run"
    run.mkdir()
    FoldsFile(2, "not-this-manifest", "z", (FoldRecord(1), FoldRecord(2))).write(run / "folds.json")
    with pytest.raises(TrainingError, match="the manifest .sha256., the fold assignment differ"):
        train_folds(manifest, tiny_config(split=FOLDS), run, resume=True)


def test_a_single_fold_is_refused(tiny_manifest: TinyManifest, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="2 folds or more"):
        train_folds(tiny_manifest(), tiny_config(), tmp_path / "run")
