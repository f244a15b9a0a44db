"""``usdcm evaluate``: a run's best checkpoint on a held-out split or an external manifest.

Owns choosing the images (the run's own ``splits.csv``, or every labelled row of another
manifest), predicting them with the training-time preprocessing, and writing
``predictions.csv`` plus ``evaluation.json`` (the context the report describes). The
validation split is predicted too, so that the report can choose the threshold there,
before it looks at the evaluated split. Also owns two checks: that the run's manifest is
still the one the checkpoint was trained on (refused otherwise, unless allowed), and the
leakage check (:mod:`.leakage`). Never computes a metric: :mod:`.reporting` does. Never
reads ``sys.argv``: the caller passes the command line to record.

A cross-validated run (``usdcm train --folds K``) is evaluated with the ensemble of its
folds (the mean of their probabilities). Its non-test images were each trained on by K-1
folds, so none is predicted again: the run's out-of-fold predictions
(``RUN/oof_predictions.csv``, split ``oof``) are copied in instead, and the report chooses
its threshold on them as it does on a plain run's val rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usdcm.artifacts.evaluation import (
    EVALUATION_JSON,
    EvaluationContext,
    LeakageCheck,
    ManifestCheck,
)
from usdcm.artifacts.manifest import read_manifest
from usdcm.artifacts.predictions import (
    OOF_PREDICTIONS_CSV,
    OOF_SPLIT,
    PREDICTIONS_CSV,
    read_predictions,
    write_predictions,
)
from usdcm.artifacts.splits import SplitRow, read_splits_file
from usdcm.errors import EvaluationError, ManifestChangedError
from usdcm.evaluation.leakage import check_external, check_run_splits

if TYPE_CHECKING:
    from usdcm.inference.model import Classifier

SPLITS = ("train", "val", "test")
LEVEL_OF_LABEL_KEY = {
    "PatientID": "patient",
    "AccessionNumber": "study",
    "StudyInstanceUID": "study",
    "SeriesInstanceUID": "series",
    "SOPInstanceUID": "image",
}


def ingest_summary(manifest: Path) -> dict[str, Any]:
    """``ingest.json`` beside a manifest (counts, exclusions, label key), or ``{}``."""
    path = manifest.parent / "ingest.json"
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def same_secret(first: Path, second: Path) -> bool | None:
    """Whether two manifests were ingested with the same pseudonym secret; None if unknown.

    Told by the ``secret_fingerprint`` of the ``ingest.json`` beside each (a keyed hash of a
    constant: equal exactly when the secrets are), or by the two being the same file.
    """
    try:
        if first.resolve() == second.resolve():
            return True
    except OSError:
        pass
    prints = [str(ingest_summary(path).get("secret_fingerprint") or "") for path in (first, second)]
    if not all(prints):
        return None
    return prints[0] == prints[1]


def check_manifest(
    manifest: Path, expected: str, checkpoint: Path, *, allow_changed: bool
) -> ManifestCheck:
    """Compare ``manifest``'s sha256 with the one the checkpoint recorded.

    Raises
    ------
    ManifestChangedError
        They differ and ``allow_changed`` is false: one line naming both hashes and the fix.
    """
    from usdcm.runtime.checkpoint import sha256_file

    check = ManifestCheck.of(expected, sha256_file(manifest))
    if check.status == "changed" and not allow_changed:
        message = (
            f"The manifest {manifest} has changed since {checkpoint} was trained on it "
            f"(sha256 {check.actual_sha256}, trained on {check.expected_sha256}); restore the "
            "manifest the run was trained on, or retrain on this one, or pass "
            "--allow-changed-manifest to evaluate anyway (the report records the mismatch)."
        )
        raise ManifestChangedError(message)
    return check


def default_level(manifest: Path) -> str:
    """The level labels were given at: from the ingest's label key column, else image."""
    key = str(ingest_summary(manifest).get("labels", {}).get("key", ""))
    return LEVEL_OF_LABEL_KEY.get(key, "image")


def _items(rows: Sequence[dict[str, str]], root: Path, labels: dict[str, int]) -> list[Any]:
    items = []
    for row in rows:
        path = root / row["image_path"]
        if not path.is_file():
            message = f"The image {path} of the manifest is missing; re-run `usdcm ingest`."
            raise EvaluationError(message)
        items.append(
            {"image": str(path), "label": labels.get(row["label"], -1), "image_id": row["image_id"]}
        )
    return items


def evaluate_run(
    run: Path,
    out: Path,
    *,
    manifest: Path | None = None,
    split: str = "test",
    device: str = "auto",
    on_image: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    allow_changed_manifest: bool = False,
    command: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Predict the evaluated images (and the validation split) of ``run`` into ``out``.

    ``command`` is the exact command line to record (the CLI builds it with
    ``shlex.join(["usdcm", *args])``); None records none. The run's manifest must be the
    one its checkpoint was trained on (same sha256) unless ``allow_changed_manifest``.

    Returns the path of ``predictions.csv`` and the evaluation context written to
    ``evaluation.json``.

    Raises
    ------
    ManifestChangedError
        The run's manifest changed since training, and that was not allowed.
    EvaluationError
        No labelled images in the split, labels the model does not know, a missing image.
    """
    from usdcm.inference.model import Ensemble, load_trained_model
    from usdcm.inference.predict import predict_items

    trained = load_trained_model(run, device)
    folds = len(trained.members) if isinstance(trained, Ensemble) else 0
    run_dir = trained.checkpoint_path.parent
    train_manifest = trained.manifest_path
    label_map = {name: index for index, name in enumerate(trained.classes)}
    by_split: dict[str, list[dict[str, str]]] = {}
    roots: dict[str, Path] = {}
    split_rows: list[SplitRow] = []
    train_rows: list[dict[str, str]] = []
    manifest_check: ManifestCheck | None = None
    splits_path = run_dir / "splits.csv"
    if train_manifest is not None and train_manifest.is_file():
        expected = str(trained.payload.get("manifest_sha256") or "")
        if expected:
            manifest_check = check_manifest(
                train_manifest,
                expected,
                trained.checkpoint_path,
                allow_changed=allow_changed_manifest,
            )
        split_rows = read_splits_file(splits_path)
        splits = {row.image_id: row.split for row in split_rows}
        train_rows = read_manifest(train_manifest)
        for row in train_rows:
            name = splits.get(row.get("image_id", ""))
            if name is not None:
                by_split.setdefault(name, []).append(row)
        roots = dict.fromkeys(SPLITS, train_manifest.parent)
    elif manifest is None:
        message = (
            f"The run {run_dir} was trained on {train_manifest}, which is gone; pass "
            "--manifest to evaluate on a manifest that exists."
        )
        raise EvaluationError(message)
    if manifest is not None:
        split = "external"
        rows = [row for row in read_manifest(manifest) if row.get("label", "").strip()]
        by_split["external"] = rows
        roots["external"] = manifest.parent
        if not split_rows and splits_path.is_file():
            split_rows = read_splits_file(splits_path)  # the run's manifest is gone
    if folds and manifest is None and split != "test":
        message = (
            f"The run {run_dir} is cross-validated ({folds} folds): each of its non-test "
            "images was trained on by the other folds, and its out-of-fold prediction is in "
            f"{run_dir / OOF_PREDICTIONS_CSV} (report it with `usdcm report`); evaluate "
            "--split test, or pass --manifest."
        )
        raise EvaluationError(message)
    if split not in by_split or not by_split[split]:
        message = (
            f"The split {split!r} holds no labelled images; choose one of "
            f"{', '.join(sorted(by_split)) or '(none)'}, or pass --manifest."
        )
        raise EvaluationError(message)
    unknown = sorted({row["label"] for row in by_split[split]} - set(label_map))
    if unknown:
        message = (
            f"The labels {unknown} are not among the model's classes {trained.classes}; "
            "evaluate on data labelled like the training data."
        )
        raise EvaluationError(message)
    predicted = [split] if split == "val" or "val" not in by_split else ["val", split]
    if on_start is not None:
        on_start(sum(len(by_split[name]) for name in predicted))
    rows_out: list[dict[str, Any]] = []
    if folds:
        rows_out.extend(_oof_rows(run_dir / OOF_PREDICTIONS_CSV, trained.classes))
    for name in predicted:
        rows = by_split[name]
        result = predict_items(trained, _items(rows, roots[name], label_map), on_image=on_image)
        for row, probs in zip(rows, result.probabilities, strict=True):
            record: dict[str, Any] = {
                "image_id": row["image_id"],
                "split": name,
                "label": row["label"],
                **{f"prob_{c}": float(p) for c, p in zip(trained.classes, probs, strict=True)},
            }
            for column in ("patient_key", "study_key", "series_key", "manufacturer", "model"):
                record[column] = row.get(column, "")  # keyed pseudonyms only, never a UID
            record["frames"] = row.get("frames", "")
            rows_out.append(record)

    out.mkdir(parents=True, exist_ok=True)
    predictions_path = out / PREDICTIONS_CSV
    write_predictions(predictions_path, rows_out, trained.classes)
    source_manifest = manifest or train_manifest
    assert source_manifest is not None
    if manifest is None:
        leakage = check_run_splits(split_rows, train_rows)
    elif not split_rows:
        leakage = LeakageCheck(
            "not checkable",
            f"Not checkable: the run has no splits.csv ({splits_path}) to compare the external "
            "manifest with; evaluate a run folder written by `usdcm train`.",
        )
    else:
        leakage = check_external(
            by_split["external"],
            [row for row in split_rows if row.split in ("train", "val")],
            seen_manifest_rows=train_rows,
            same_secret=(
                same_secret(train_manifest, manifest) if train_manifest is not None else None
            ),
        )
    context = _context(
        trained,
        run_dir,
        source_manifest,
        split,
        by_split,
        roots,
        leakage=leakage,
        manifest_check=manifest_check,
        commands=(str(trained.payload.get("command") or ""), command or ""),
    )
    context.write(out / EVALUATION_JSON)
    return predictions_path, context.to_dict()


def _oof_rows(path: Path, classes: Sequence[str]) -> list[dict[str, Any]]:
    """The out-of-fold rows of a cross-validated run, as predictions rows of split ``oof``."""
    rows, found = read_predictions(path)
    if list(found) != list(classes):
        message = f"{path} holds the classes {found}, the folds {list(classes)}; retrain."
        raise EvaluationError(message)
    columns = ("image_id", "label", *(f"prob_{c}" for c in classes))
    context = ("patient_key", "study_key", "series_key", "manufacturer", "model", "frames")
    return [
        {
            **{column: row[column] for column in columns},
            "split": OOF_SPLIT,
            **{column: row.get(column, "") for column in context},
        }
        for row in rows
    ]


def _context(
    trained: Classifier,
    run_dir: Path,
    manifest: Path,
    split: str,
    by_split: dict[str, list[dict[str, str]]],
    roots: dict[str, Path],
    *,
    leakage: LeakageCheck,
    manifest_check: ManifestCheck | None,
    commands: tuple[str, ...],
) -> EvaluationContext:
    """What the report says about data, split and model; no patient identifier."""
    evaluated = by_split[split]
    ingest = ingest_summary(manifest)
    payload = trained.payload
    prevalence = {name: dict(Counter(r["label"] for r in rows)) for name, rows in by_split.items()}
    manufacturers = Counter(r.get("manufacturer") or "(unknown)" for r in evaluated)
    models = Counter(
        f"{r.get('manufacturer') or '(unknown)'} {r.get('model') or '(unknown)'}" for r in evaluated
    )
    return EvaluationContext(
        run_dir=str(run_dir),
        manifest=str(manifest),
        split=split,
        default_level=default_level(manifest),
        image_roots={name: str(path) for name, path in roots.items()},
        intended_use=trained.config.intended_use,
        commands=tuple(command for command in commands if command),
        data={
            "sources": [str(manifest)],
            "manufacturers": dict(manufacturers.most_common()),
            "models": dict(models.most_common()),
            "labels": dict(Counter(r["label"] for r in evaluated)),
            "exclusions": ingest.get("excluded_by_code", {}),
            "files_in_export": ingest.get("n_files"),
            "label_key": ingest.get("labels", {}).get("key", ""),
            "label_counts_by_split": prevalence,
        },
        split_counts={name: len(rows) for name, rows in sorted(by_split.items())},
        split_source=(
            "external manifest (every labelled image)"
            if split == "external"
            else "the run's splits.csv (manifest split column, or grouped by patient and "
            "study, stratified by label)"
            + (
                f"; the non-test images in {len(payload['folds'])} cross-validation folds, "
                "grouped and stratified the same way"
                if payload.get("folds")
                else ""
            )
        ),
        leakage_check=leakage,
        manifest_check=manifest_check,
        model={
            "architecture": trained.config.model.name,
            "checkpoint": str(trained.checkpoint_path),
            "checkpoint_sha256": trained.checkpoint_sha256,
            "best_epoch": payload.get("epoch"),
            "val_auc": payload.get("val_auc"),
            "input_size": payload.get("input_size"),
            "normalization": payload.get("normalization"),
            "manifest_sha256": payload.get("manifest_sha256"),
            "versions": payload.get("versions", {}),
            "weights": payload.get("weights") or {"source": "not recorded (an older run)"},
            "config": trained.config.to_dict(),
            **_ensemble_info(payload),
        },
    )


def _ensemble_info(payload: dict[str, Any]) -> dict[str, Any]:
    """A cross-validated run's folds for the report's model section; ``{}`` for one model."""
    folds = payload.get("folds")
    if not folds:
        return {}
    return {
        "ensemble": (
            f"mean of the probabilities of {len(folds)} fold models, each applied with its "
            "own preprocessing; the threshold rows are the out-of-fold predictions"
        ),
        "folds": folds,
    }
