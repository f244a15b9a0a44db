"""Cross-validation: K folds of one manifest, each a normal run, and their out-of-fold predictions.

Owns the folder of a cross-validated run (``split.folds`` K > 1)::

    RUN/config.yaml            the resolved config
    RUN/splits.csv             the test images, and the fold of every other image
    RUN/folds.json             the folds, whether each is done, its best validation AUC
    RUN/fold-<k>/              a normal run folder per fold (best.pt, last.pt, metrics.jsonl,
                               splits.csv, ...), written by usdcm.training.run.train
    RUN/oof_predictions.csv    every non-test image once, predicted by the fold that did
                               not train on it (split "oof")

The test split is held out exactly as a plain run holds it out; fold k trains on the other
K-1 folds and validates on fold k (:func:`usdcm.data.splits.assign_folds`). Each fold
resumes on its own. Never loads a model to predict: a fold's out-of-fold predictions are
the validation probabilities its training recorded in ``best.pt`` at its best epoch, so
they are exactly what its validation AUC was computed from. Never imports inference.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from usdcm.artifacts.folds import FOLDS_JSON, FoldRecord, FoldsFile, fold_dir
from usdcm.artifacts.manifest import read_manifest
from usdcm.artifacts.predictions import (
    CONTEXT_COLUMNS,
    OOF_PREDICTIONS_CSV,
    OOF_SPLIT,
    write_predictions,
)
from usdcm.atomic import atomic_write_text
from usdcm.config import TrainConfig, dump_config
from usdcm.data.splits import TEST_FOLD, assign_folds, fold_splits, labelled_rows, write_splits
from usdcm.errors import TrainingError
from usdcm.runtime.checkpoint import load_checkpoint, sha256_file
from usdcm.runtime.predict import ClipPredictions
from usdcm.training.distributed import context_from_env
from usdcm.training.engine import classification_metrics
from usdcm.training.progress import NoProgress, TrainingProgress
from usdcm.training.run import TrainResult, train

__all__ = ["FoldsResult", "train_folds"]


@dataclass
class FoldsResult:
    """What a cross-validated run produced.

    ``results`` holds the :class:`TrainResult` of each fold trained by this call, by fold;
    a fold skipped because a resumed run had finished it is absent.
    """

    run_dir: Path
    record: FoldsFile
    results: dict[int, TrainResult] = field(default_factory=dict)
    oof_path: Path | None = None
    is_main: bool = True


class _FoldProgress:
    """Prefixes every phase with the fold: ``fold 2/5 epoch 3``."""

    def __init__(self, inner: TrainingProgress, fold: int, k: int) -> None:
        self._inner, self._prefix = inner, f"fold {fold}/{k}"

    def phase(self, name: str, total: int) -> None:
        self._inner.phase(f"{self._prefix} {name}", total)

    def advance(self, count: int = 1) -> None:
        self._inner.advance(count)


def _assignment_sha256(assignment: Mapping[str, int]) -> str:
    """A hash of ``{image_id: fold}``, independent of order."""
    text = "\n".join(f"{image_id}\t{fold}" for image_id, fold in sorted(assignment.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def train_folds(
    manifest_path: Path,
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: TrainingProgress | None = None,
    command: str | None = None,
    on_fold: Callable[[int, TrainResult], None] | None = None,
) -> FoldsResult:
    """Train the ``config.split.folds`` folds of ``manifest_path`` into ``run_dir``.

    Parameters
    ----------
    manifest_path, config, run_dir
        As for :func:`usdcm.training.run.train`; ``config.split.folds`` must be 2 or more.
    resume
        Continue a cross-validated run that was stopped: folds that ``folds.json`` marks
        done are skipped, the fold that was training continues from its ``last.pt``, the
        others start. The manifest and the fold assignment must be those of the run.
        Without it every fold starts anew.
    progress, command
        As for :func:`~usdcm.training.run.train`; phases are prefixed ``fold k/K``.
    on_fold
        Called with the fold number and its result after each fold trained by this call.

    Returns
    -------
    FoldsResult

    Raises
    ------
    TrainingError
        Fewer than 2 folds, ``resume`` without a matching ``folds.json``, or a fold whose
        ``best.pt`` holds no validation predictions.
    SplitError
        Fewer patients outside the test split than folds.
    """
    k = config.split.folds
    if k < 2:
        message = f"split.folds is {k}; cross-validation needs 2 folds or more."
        raise TrainingError(message)
    manifest_path = manifest_path.resolve()
    manifest = read_manifest(manifest_path)
    rows = labelled_rows(manifest)
    assignment = assign_folds(
        rows,
        folds=k,
        val_fraction=config.split.val_fraction,
        test_fraction=config.split.test_fraction,
        seed=config.split.seed,
    )
    is_main = context_from_env().is_main
    folds_path = run_dir / FOLDS_JSON
    fresh = FoldsFile(
        k=k,
        manifest_sha256=sha256_file(manifest_path),
        assignment_sha256=_assignment_sha256(assignment),
        folds=tuple(FoldRecord(fold) for fold in range(1, k + 1)),
    )
    if resume:
        record = _resumable(folds_path, fresh)
    else:
        record = fresh
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", dump_config(config))
            splits = {i: "test" if f == TEST_FOLD else "train" for i, f in assignment.items()}
            write_splits(run_dir / "splits.csv", rows, splits, assignment)
            record.write(folds_path)

    result = FoldsResult(run_dir=run_dir, record=record, is_main=is_main)
    for entry in record.folds:
        fold, folder = entry.fold, fold_dir(run_dir, entry.fold)
        if resume and entry.done and (folder / "best.pt").is_file():
            continue
        trained = train(
            manifest_path,
            config,
            folder,
            resume=resume and (folder / "last.pt").is_file(),
            progress=_FoldProgress(progress or NoProgress(), fold, k),
            command=command,
            splits=fold_splits(assignment, fold),
        )
        result.results[fold] = trained
        if is_main:
            done = FoldRecord(
                fold,
                "done",
                best_epoch=trained.best_epoch,
                val_auc=trained.best_auc,
                n_train=trained.n_images.get("train", 0),
                n_val=trained.n_images.get("val", 0),
                checkpoint_sha256=sha256_file(folder / "best.pt"),
            )
            result.record = result.record.with_fold(done)
            result.record.write(folds_path)
        if on_fold is not None:
            on_fold(fold, trained)

    if is_main:
        oof, classes = _oof_rows(run_dir, k, manifest, assignment)
        result.oof_path = run_dir / OOF_PREDICTIONS_CSV
        write_predictions(result.oof_path, oof, classes)
        result.record = replace(result.record, oof_auc=_oof_auc(oof, classes))
        result.record.write(folds_path)
    return result


def _resumable(path: Path, fresh: FoldsFile) -> FoldsFile:
    """The run's ``folds.json``, refused unless it describes the folds ``fresh`` does."""
    if not path.is_file():
        message = (
            f"--resume needs {path}, which does not exist; drop --resume to start the "
            "cross-validated run anew."
        )
        raise TrainingError(message)
    record = FoldsFile.read(path)
    differences = [
        name
        for name, ours, theirs in (
            ("the number of folds", fresh.k, record.k),
            ("the manifest (sha256)", fresh.manifest_sha256, record.manifest_sha256),
            ("the fold assignment", fresh.assignment_sha256, record.assignment_sha256),
        )
        if ours != theirs
    ]
    if differences:
        message = (
            f"Cannot resume {path.parent}: {', '.join(differences)} differ from the run's "
            f"(it has {record.k} folds); resume with the same manifest, split settings and "
            "--folds, or start a new run folder."
        )
        raise TrainingError(message)
    return record


def _oof_rows(
    run_dir: Path,
    k: int,
    manifest: Sequence[Mapping[str, str]],
    assignment: Mapping[str, int],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each fold's best-epoch validation probabilities as predictions rows, in manifest order.

    Checks that every non-test image is predicted exactly once, by the fold that held it out.
    """
    probabilities: dict[str, list[float]] = {}
    classes: list[str] = []
    for fold in range(1, k + 1):
        best = fold_dir(run_dir, fold) / "best.pt"
        payload = load_checkpoint(best)
        recorded = payload.get("val_predictions")
        if not isinstance(recorded, dict):
            message = (
                f"{best} holds no validation predictions (written by an older usdcm); "
                "train the folds anew without --resume."
            )
            raise TrainingError(message)
        label_map = {str(name): int(index) for name, index in payload["label_map"].items()}
        fold_classes = sorted(label_map, key=label_map.__getitem__)
        if classes and fold_classes != classes:
            message = f"Fold {fold} has the classes {fold_classes}, fold 1 {classes}; retrain."
            raise TrainingError(message)
        classes = fold_classes
        for image_id, probs in zip(recorded["image_ids"], recorded["probabilities"], strict=True):
            if assignment.get(image_id) != fold or image_id in probabilities:
                message = (
                    f"Fold {fold}'s validation predictions do not match its fold of "
                    f"{run_dir / 'splits.csv'}; train the folds anew without --resume."
                )
                raise TrainingError(message)
            probabilities[image_id] = [float(p) for p in probs]
    expected = {image_id for image_id, fold in assignment.items() if fold != TEST_FOLD}
    if set(probabilities) != expected:
        message = (
            f"The folds predicted {len(probabilities)} of the {len(expected)} non-test images; "
            "train the folds anew without --resume."
        )
        raise TrainingError(message)
    rows: list[dict[str, Any]] = []
    for row in manifest:
        image_id = (row.get("image_id") or "").strip()
        if image_id not in probabilities:
            continue
        record: dict[str, Any] = {
            "image_id": image_id,
            "split": OOF_SPLIT,
            "label": (row.get("label") or "").strip(),
        }
        for name, value in zip(classes, probabilities[image_id], strict=True):
            record[f"prob_{name}"] = value
        for column in CONTEXT_COLUMNS:
            record[column] = row.get(column, "")  # keyed pseudonyms only, never a UID
        rows.append(record)
    return rows, classes


def _oof_auc(rows: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> float | None:
    """The AUC of the out-of-fold rows, computed as training computes a validation AUC."""
    index = {name: position for position, name in enumerate(classes)}
    predictions = ClipPredictions(
        image_ids=[str(row["image_id"]) for row in rows],
        labels=np.array([index[row["label"]] for row in rows], dtype=np.int64),
        probabilities=np.array(
            [[float(row[f"prob_{name}"]) for name in classes] for row in rows], dtype=np.float64
        ),
    )
    auc = classification_metrics(predictions, len(classes))["auc"]
    return None if math.isnan(auc) else auc
