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
    CONTEXT_COLUMNS,
    DEMOGRAPHIC_COLUMNS,
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


MISSING_IMAGE = "image file missing (re-run `usdcm ingest`)"
"""The ``flow.unscored`` reason of a manifest image whose NIfTI file is not there."""


def _items(rows: Sequence[dict[str, str]], root: Path, labels: dict[str, int]) -> list[Any]:
    return [
        {
            "image": str(root / row["image_path"]),
            "label": labels.get(row["label"], -1),
            "image_id": row["image_id"],
        }
        for row in rows
    ]


def _score(
    trained: Classifier,
    rows: Sequence[dict[str, str]],
    root: Path,
    labels: dict[str, int],
    on_image: Callable[[int], None] | None,
) -> tuple[list[dict[str, str]], list[Any], Counter[str]]:
    """Predict ``rows``; return the rows scored, their probabilities and, by reason, how
    many could not be scored.

    An image whose file is missing is not scored (:data:`MISSING_IMAGE`). One that cannot be
    read or preprocessed fails its whole batch: the batch is then predicted image by image,
    so that only that image is left unscored, with the error's type as its reason. If no
    image can be predicted at all, the fault is not in the images: the error is raised.
    """
    from usdcm.inference.predict import predict_items

    reasons: Counter[str] = Counter()
    present = []
    for row in rows:
        if (root / row["image_path"]).is_file():
            present.append(row)
        else:
            reasons[MISSING_IMAGE] += 1
            if on_image is not None:
                on_image(1)
    if not present:
        return [], [], reasons
    items = _items(present, root, labels)
    try:
        result = predict_items(trained, items, on_image=on_image)
    except Exception as err:  # a damaged image breaks MONAI's loader in any way
        failure: Exception = err
    else:
        return present, list(result.probabilities), reasons
    scored: list[dict[str, str]] = []
    probabilities: list[Any] = []
    for row, item in zip(present, items, strict=True):
        try:
            one = predict_items(trained, [item])
        except Exception as err:  # this image's own fault: recorded, never dropped silently
            reasons[f"image could not be read or preprocessed ({type(err).__name__})"] += 1
            continue
        scored.append(row)
        probabilities.append(one.probabilities[0])
    if not scored:
        message = (
            f"No image could be predicted ({type(failure).__name__}: {failure}); the fault is "
            "not in one image: check the run folder and the device."
        )
        raise EvaluationError(message) from failure
    return scored, probabilities, reasons


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
    reference_standard: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Predict the evaluated images (and the validation split) of ``run`` into ``out``.

    ``command`` is the exact command line to record (the CLI builds it with
    ``shlex.join(["usdcm", *args])``); None records none. The run's manifest must be the
    one its checkpoint was trained on (same sha256) unless ``allow_changed_manifest``.
    ``reference_standard`` (how the labels were established) is recorded; None takes the
    run config's ``reference_standard``.

    An image that cannot be scored (its file missing, or unreadable) is left out of
    ``predictions.csv`` and counted by reason in ``evaluation.json``'s ``flow.unscored``
    (``flow.threshold_unscored`` for the validation split); nothing is dropped silently.

    Returns the path of ``predictions.csv`` and the evaluation context written to
    ``evaluation.json``.

    Raises
    ------
    ManifestChangedError
        The run's manifest changed since training, and that was not allowed.
    EvaluationError
        No labelled images in the split, labels the model does not know, no image of the
        split that could be scored.
    """
    from usdcm.inference.model import Ensemble, load_trained_model

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
    source_rows = train_rows
    if manifest is not None:
        split = "external"
        source_rows = read_manifest(manifest)
        rows = [row for row in source_rows if row.get("label", "").strip()]
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
        demographics = {row.get("image_id", ""): row for row in train_rows}
        rows_out.extend(_oof_rows(run_dir / OOF_PREDICTIONS_CSV, trained.classes, demographics))
    unscored: dict[str, Counter[str]] = {}
    scored_rows: list[dict[str, str]] = []
    for name in predicted:
        rows = by_split[name]
        scored, probabilities, unscored[name] = _score(
            trained, rows, roots[name], label_map, on_image
        )
        if name == split:
            scored_rows = scored
        for row, probs in zip(scored, probabilities, strict=True):
            record: dict[str, Any] = {
                "image_id": row["image_id"],
                "split": name,
                "label": row["label"],
                **{f"prob_{c}": float(p) for c, p in zip(trained.classes, probs, strict=True)},
            }
            for column in CONTEXT_COLUMNS:
                record[column] = row.get(column, "")  # keyed pseudonyms only, never a UID
            rows_out.append(record)
    if not scored_rows:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in unscored[split].items())
        message = f"No image of the split {split!r} could be scored ({reasons})."
        raise EvaluationError(message)

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
        reference_standard=(
            trained.config.reference_standard if reference_standard is None else reference_standard
        ),
        flow=participant_flow(
            ingest_summary(source_manifest),
            source_rows,
            split_rows if manifest is None else None,
            split=split,
            evaluated=by_split[split],
            scored=scored_rows,
            unscored=unscored[split],
            threshold_split=(
                OOF_SPLIT if folds else "val" if "val" in predicted and split != "val" else None
            ),
            threshold_unscored=unscored.get("val", Counter()),
        ),
        deidentification=deidentification(ingest_summary(source_manifest), source_rows),
    )
    context.write(out / EVALUATION_JSON)
    return predictions_path, context.to_dict()


def _oof_rows(
    path: Path, classes: Sequence[str], manifest_rows: dict[str, dict[str, str]]
) -> list[dict[str, Any]]:
    """The out-of-fold rows of a cross-validated run, as predictions rows of split ``oof``;
    the sex, age band and study year of each come from its manifest row."""
    rows, found = read_predictions(path)
    if list(found) != list(classes):
        message = f"{path} holds the classes {found}, the folds {list(classes)}; retrain."
        raise EvaluationError(message)
    columns = ("image_id", "label", *(f"prob_{c}" for c in classes))
    records = []
    for row in rows:
        source = manifest_rows.get(row["image_id"], {})
        record = {column: row[column] for column in columns}
        record["split"] = OOF_SPLIT
        for column in CONTEXT_COLUMNS:
            value = row.get(column) or ""
            if column in DEMOGRAPHIC_COLUMNS and not value:
                value = source.get(column) or ""
            record[column] = value
        records.append(record)
    return records


UNKNOWN = "(unknown)"
"""How an empty value is counted (a study without a year)."""


def _counts(rows: Sequence[dict[str, str]], column: str) -> dict[str, int]:
    """Rows per value of ``column``, sorted, an empty value counted as ``"(unknown)"``.

    >>> _counts([{"sex": "F"}, {"sex": ""}, {}, {"sex": "F"}], "sex")
    {'(unknown)': 2, 'F': 2}
    """
    return dict(sorted(Counter(row.get(column) or UNKNOWN for row in rows).items()))


def participant_flow(
    ingest: dict[str, Any],
    manifest_rows: Sequence[dict[str, str]],
    split_rows: Sequence[SplitRow] | None,
    *,
    split: str,
    evaluated: Sequence[dict[str, str]],
    scored: Sequence[dict[str, str]],
    unscored: Counter[str],
    threshold_split: str | None = None,
    threshold_unscored: Counter[str] | None = None,
) -> dict[str, Any]:
    """The STARD 2015 item 19 counts, each from an artifact, so that they add up.

    Files in the export and files excluded, by code, come from ``ingest.json``
    (``files_in_export`` is None without one); images, labelled and unlabelled from the
    manifest; the labelled images of each split (or fold, ``fold-<k>``) from the run's
    ``splits.csv`` (None: an external manifest, whose labelled images are all evaluated);
    evaluated, scored and unscored images (by reason) from what evaluate predicted.
    ``files_in_export = images + sum(excluded)`` when ``ingest.json`` is there; ``labelled +
    unlabelled = images``; ``sum(by_split) = labelled``; ``evaluated_images = scored_images
    + sum(unscored)``. A labelled image that is in no split (a manifest changed since
    training) is counted in ``by_split`` as ``"not in the run's splits"``.
    ``scored_by_level`` counts the distinct series, studies and patients of the scored
    images, the cases of each level of analysis.
    """
    ids = {row.get("image_id", "") for row in manifest_rows}
    labelled = [row for row in manifest_rows if (row.get("label") or "").strip()]
    by_split: Counter[str] = Counter()
    if split_rows is None:
        by_split[split] = len(labelled)
    else:
        groups = {row.image_id: row.group for row in split_rows if row.image_id in ids}
        by_split.update(groups.values())
        missing = sum(1 for row in labelled if row.get("image_id", "") not in groups)
        if missing:
            by_split["not in the run's splits"] = missing
    files = ingest.get("n_files")
    return {
        "files_in_export": int(files) if isinstance(files, int) else None,
        "excluded": {str(k): int(v) for k, v in dict(ingest.get("excluded_by_code") or {}).items()},
        "images": len(manifest_rows),
        "unlabelled": len(manifest_rows) - len(labelled),
        "labelled": len(labelled),
        "by_split": dict(by_split),
        "evaluated_split": split,
        "evaluated_images": len(evaluated),
        "scored_images": len(scored),
        "unscored": dict(unscored),
        "scored_by_level": {
            "image": len(scored),
            "series": len({row.get("series_key") or row["image_id"] for row in scored}),
            "study": len({row.get("study_key") or row["image_id"] for row in scored}),
            "patient": len({row.get("patient_key") or row["image_id"] for row in scored}),
        },
        "threshold_split": threshold_split,
        "threshold_unscored": dict(threshold_unscored or {}),
    }


def deidentification(
    ingest: dict[str, Any], manifest_rows: Sequence[dict[str, str]]
) -> dict[str, Any]:
    """What ingest did, and did not do, to keep identifiers out, in plain sentences, with
    the counts of images cropped to an ultrasound region and of images without one.

    The counts come from the manifest's ``crop`` column (empty: no region, whole frame
    kept); they are None for a manifest without that column (written by other means).
    """
    images = len(manifest_rows)
    has_crop = any("crop" in row for row in manifest_rows)
    cropped = sum(1 for row in manifest_rows if (row.get("crop") or "").strip())
    without = images - cropped if has_crop else None
    done = [
        "Patients, studies, series and images are named by keyed pseudonyms (HMAC-SHA256 "
        "under the project secret); predictions, splits, metrics and the report carry only "
        "these, and the secret itself is never written outside its file.",
        "Each image was cropped to the largest 2D tissue region of its Sequence of Ultrasound "
        "Regions (0018,6011), which leaves out the banner a scanner burns in above it (name, "
        "ID, dates)" + (f": {cropped} of {images} images were cropped." if has_crop else "."),
        "The images were written as NIfTI files, which carry no DICOM header: no name, ID, "
        "birth date, accession number or UID.",
        "No DICOM UID is written to predictions.csv, splits.csv, evaluation.json, "
        "metrics.json or the report; the manifest, which stays beside the secret, keeps them.",
        "Ages are kept as 10-year bands (90 and over grouped) and dates as study years only; "
        "no birth date or full date is written.",
    ]
    if without:
        region = (
            f"{without} of {images} images had no ultrasound region: their whole frame was "
            "kept, with any text burned into it (name, ID, dates)."
        )
    elif has_crop:
        region = (
            "Every image had an ultrasound region; an image without one would keep its whole "
            "frame, with any text burned into it."
        )
    else:
        region = (
            "Whether each image was cropped to an ultrasound region is unknown: the manifest "
            "has no crop column."
        )
    not_done = [
        "Text burned in inside the ultrasound region (annotations, measurements, a name "
        "typed onto the image) was not looked for or removed: no text recognition was run.",
        region,
        "The source DICOM files were not changed: they still hold every identifier and must "
        "be protected as before.",
        "The manifest keeps the DICOM UIDs (to join labels and trace images back), so it is "
        "not anonymous and stays with the data and the secret.",
        "Pseudonyms are not anonymisation: whoever holds the secret, or the source files, can "
        "link them back to the patients.",
        "The risk of re-identification from the pixels themselves, or from rare combinations "
        "of sex, age band, study year and scanner, was not assessed.",
    ]
    return {
        "pseudonyms": (
            "HMAC-SHA256 keyed with the project secret; outputs carry only the secret's "
            "fingerprint (a keyed hash of a constant), which tells whether two ingests share "
            "the secret without revealing it."
        ),
        "secret_fingerprint": str(ingest.get("secret_fingerprint") or ""),
        "region_crop": {
            "images": images,
            "cropped": cropped if has_crop else None,
            "without_region": without,
        },
        "uids_in_outputs": False,
        "done": done,
        "not_done": not_done,
    }


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
    reference_standard: str = "",
    flow: dict[str, Any] | None = None,
    deidentification: dict[str, Any] | None = None,
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
            "sexes": _counts(evaluated, "sex"),
            "age_bands": _counts(evaluated, "age_band"),
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
        reference_standard=reference_standard,
        flow=flow or {},
        deidentification=deidentification or {},
        study_years=_counts(evaluated, "study_year"),
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
