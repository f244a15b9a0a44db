"""``usdcm report``: everything recomputed from ``predictions.csv``, then rendered.

Owns the decisions between predictions and numbers: which rows are evaluated, at which
level, which class is positive, and where the threshold is chosen (the val rows, before the
evaluated rows are looked at; on the evaluated rows only as an exploratory report). Writes
``metrics.json`` and hands the rendering to :mod:`usdcm.report`. The statistics themselves
live in :mod:`usdcm.metrics`. With a cross-validated run's predictions, which hold
out-of-fold rows (split ``oof``) instead of val rows, the threshold is chosen on the
out-of-fold rows, and their AUC is reported as the cross-validation result
(``metrics["cross_validation"]``). The same val (or out-of-fold) rows, and only they, fit
the recalibration reported beside the uncalibrated figures (``metrics["recalibration"]``);
none is fitted when the evaluated rows are themselves the val or out-of-fold rows.
``evaluation.json`` beside the predictions, when present, only adds descriptions (data,
split, model) and thumbnails; never a number.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from usdcm import __version__
from usdcm.artifacts.evaluation import EVALUATION_JSON, EvaluationContext
from usdcm.artifacts.metrics import METRICS_JSON, Level, MetricsFile
from usdcm.artifacts.predictions import OOF_SPLIT, Predictions
from usdcm.digest import sha256_file
from usdcm.errors import ReportError

NEGATIVE_NAMES = ("normal", "negative", "benign", "healthy", "control", "absent", "no", "0")
THUMBNAIL_SIDE = 160

SUBGROUP_COLUMNS = ("manufacturer", "model", "sex", "age_band")
"""The default subgroups: :data:`usdcm.metrics.aggregate.DEFAULT_SUBGROUP_COLUMNS`, spelled
out so that importing this module does not load scikit-learn (a test keeps them equal)."""


@dataclass(frozen=True)
class ReportOptions:
    """How to compute the report; ``None`` means "decide from the data"."""

    level: Level | None = None
    threshold: str = "youden"
    positive_class: str | None = None
    subgroups: tuple[str, ...] = SUBGROUP_COLUMNS
    n_bootstrap: int = 2000
    seed: int = 0
    pdf: bool = False
    split: str | None = None
    intended_use: str | None = None
    reference_standard: str | None = None


@dataclass
class BuiltReport:
    """What was written."""

    out: Path
    metrics: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def default_positive_class(classes: Sequence[str]) -> str:
    """The positive class of a binary problem: the one not named like a negative.

    >>> default_positive_class(["abnormal", "normal"])
    'abnormal'
    >>> default_positive_class(["benign", "malignant"])
    'malignant'
    """
    negatives = [c for c in classes if c.strip().lower() in NEGATIVE_NAMES]
    others = [c for c in classes if c not in negatives]
    if len(classes) == 2 and len(negatives) == 1:
        return others[0]
    message = (
        f"Cannot tell the positive class among {list(classes)}; pass --positive-class with "
        "one of them."
    )
    raise ReportError(message)


def _evaluated_split(rows: Sequence[dict[str, str]], requested: str | None) -> str | None:
    present = {row.get("split", "") for row in rows}
    if requested is not None:
        if requested not in present:
            message = (
                f"The predictions hold no rows of split {requested!r}; they hold {sorted(present)}."
            )
            raise ReportError(message)
        return requested
    for name in ("test", "external"):
        if name in present:
            return name
    return None


def _scores(
    rows: Sequence[dict[str, str]], level: Level, classes: list[str], positive: str
) -> tuple[list[int], list[float]]:
    from usdcm.metrics import aggregate

    cases = aggregate(rows, level, classes)
    return [int(c.label == positive) for c in cases], [float(c.probs[positive]) for c in cases]


def build_report(
    predictions: Path, out: Path, options: ReportOptions, *, command: str | None = None
) -> BuiltReport:
    """Compute ``metrics.json`` from ``predictions`` and write the report into ``out``.

    ``command`` is the exact command line to record (the CLI builds it with
    ``shlex.join(["usdcm", *args])``); None records none. Never reads ``sys.argv``.
    """
    from usdcm.metrics import choose_threshold, parse_level, parse_threshold_rule, summarize

    read = Predictions.read(predictions)
    rows, classes = list(read.rows), list(read.classes)
    context = _read_context(predictions.parent / EVALUATION_JSON)
    split = _evaluated_split(rows, options.split or None)
    evaluated = [row for row in rows if split is None or row.get("split") == split]
    level = options.level or parse_level(str(context.get("default_level") or "image"))
    positive = options.positive_class or default_positive_class(classes)
    if positive not in classes:
        message = f"--positive-class {positive!r} is not among the classes {classes}."
        raise ReportError(message)

    rule = parse_threshold_rule(options.threshold)
    val_rows = [row for row in rows if row.get("split") == "val"]
    val_name = "val"
    if not val_rows:  # a cross-validated run: its out-of-fold rows stand for val
        val_rows = [row for row in rows if row.get("split") == OOF_SPLIT]
        val_name = "out-of-fold predictions (oof)"
    exploratory = False
    # the val (or oof) rows fit the recalibration, unless they are the rows evaluated
    held_out = val_rows if split not in (None, "val", OOF_SPLIT) else []
    if rule.kind.value == "fixed":
        threshold, chosen_on = float(rule.value), "fixed in advance"
    elif val_rows and split not in (None, "val", OOF_SPLIT):
        labels, scores = _scores(val_rows, level, classes, positive)
        threshold, chosen_on = choose_threshold(labels, scores, rule), val_name
    else:
        labels, scores = _scores(evaluated, level, classes, positive)
        threshold, chosen_on = choose_threshold(labels, scores, rule), split or "all rows"
        exploratory = True

    metrics = summarize(
        evaluated,
        level=level,
        classes=classes,
        positive_class=positive,
        threshold=threshold,
        threshold_rule=str(rule),
        threshold_chosen_on=chosen_on,
        subgroup_columns=options.subgroups,
        n_bootstrap=options.n_bootstrap,
        seed=options.seed,
        exploratory=exploratory,
        calibration_rows=held_out,
        calibration_on=val_name,
    )
    if split not in (None, OOF_SPLIT):
        cross_validation = _cross_validation(rows, level, classes, positive)
        if cross_validation is not None:
            metrics["cross_validation"] = cross_validation
    metrics["provenance"] = {
        "predictions": str(predictions),
        "predictions_sha256": sha256_file(predictions),
        "evaluated_split": split or "all rows",
        "usdcm_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "run_dir": context.get("run_dir", ""),
        "checkpoint_sha256": context.get("model", {}).get("checkpoint_sha256", ""),
    }
    out.mkdir(parents=True, exist_ok=True)
    files = {"metrics": out / METRICS_JSON}
    MetricsFile(metrics).write(files["metrics"])
    files.update(_render(out, metrics, context, rows, positive, split, options))
    return BuiltReport(out=out, metrics=metrics, files=files)


def _cross_validation(
    rows: Sequence[dict[str, str]], level: Level, classes: list[str], positive: str
) -> dict[str, Any] | None:
    """The out-of-fold result: AUC with its DeLong interval at ``level``; None without oof rows.

    An AUC that one class's absence leaves undefined is ``None``, never a made-up number.
    """
    from usdcm.errors import UndefinedMetricError
    from usdcm.metrics import delong_auc

    oof = [row for row in rows if row.get("split") == OOF_SPLIT]
    if not oof:
        return None
    labels, scores = _scores(oof, level, classes, positive)
    auc: dict[str, Any] = {"value": None, "ci95": [None, None], "method": "DeLong"}
    try:
        result = delong_auc(labels, scores)
    except UndefinedMetricError:
        pass
    else:
        auc["value"] = result.auc
        auc["ci95"] = [None if math.isnan(bound) else bound for bound in result.ci95]
    return {
        "split": OOF_SPLIT,
        "level": level.value,
        "n": len(labels),
        "n_positive": sum(labels),
        "auc": auc,
    }


def _read_context(path: Path) -> dict[str, Any]:
    """``evaluation.json`` as a dict, or ``{}`` where there is none (predictions alone)."""
    if not path.is_file():
        return {}
    return EvaluationContext.read(path).to_dict()


def _prevalence_by_split(rows: Sequence[dict[str, str]], positive: str) -> dict[str, float]:
    totals: dict[str, list[int]] = {}
    for row in rows:
        counts = totals.setdefault(row.get("split") or "all", [0, 0])
        counts[0] += 1
        counts[1] += int(row["label"] == positive)
    return {name: k / n for name, (n, k) in sorted(totals.items()) if n}


def _thumbnail(path: Path) -> bytes | None:
    """A PNG of the middle frame of an ingested image (already cropped to its region)."""
    import io

    import nibabel as nib
    import numpy as np
    from PIL import Image

    try:
        volume = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    except Exception:  # a thumbnail is a courtesy: no image, no thumbnail
        return None
    frame = volume[:, :, volume.shape[2] // 2]
    if frame.ndim == 3:
        frame = frame.mean(axis=-1)
    low, high = np.percentile(frame, [1, 99])
    scaled = np.clip((frame - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    image = Image.fromarray(scaled.T)  # (W, H) voxels -> rows first
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _failure_thumbnails(
    metrics: dict[str, Any], context: dict[str, Any], split: str | None
) -> dict[str, bytes]:
    root = context.get("image_roots", {}).get(split or "", "")
    if not root:
        return {}
    thumbnails: dict[str, bytes] = {}
    failures = metrics.get("failures") or {}
    for case in [*failures.get("false_positives", []), *failures.get("false_negatives", [])]:
        image_ids = case.get("image_ids") or []
        if image_ids:
            images = Path(root) / "images"
            # .nii.gz, or .nii from an ingest with --compress none
            path = next(
                (
                    p
                    for p in (images / f"{image_ids[0]}{s}" for s in (".nii.gz", ".nii"))
                    if p.is_file()
                ),
                images / f"{image_ids[0]}.nii.gz",
            )
            png = _thumbnail(path)
            if png is not None:
                thumbnails[str(case["id"])] = png
    return thumbnails


def _render(
    out: Path,
    metrics: dict[str, Any],
    context: dict[str, Any],
    rows: Sequence[dict[str, str]],
    positive: str,
    split: str | None,
    options: ReportOptions,
) -> dict[str, Path]:
    from usdcm.report import ReportContext, evaluation_fields, write_report

    data = dict(context.get("data", {}))
    model = dict(context.get("model", {}))
    recorded = [*context.get("commands", []), metrics["provenance"]["command"]]
    commands = list(dict.fromkeys(str(c) for c in recorded if c))  # in order, once
    report_context = ReportContext(
        intended_use=options.intended_use or str(context.get("intended_use") or ""),
        data=data,
        split=dict(context.get("split_info", {})),
        model=model,
        commands=commands,
        failure_thumbnails=_failure_thumbnails(metrics, context, split),
        prevalence_by_split=_prevalence_by_split(rows, positive),
        **evaluation_fields(context, options.reference_standard),
    )
    files = write_report(out, metrics, report_context, pdf=options.pdf)
    if options.pdf and files.pdf is None:
        message = "--pdf needs chromium on PATH (Debian: apt-get install chromium)."
        raise ReportError(message)
    written = {"html": files.html, "markdown": files.markdown}
    if files.pdf is not None:
        written["pdf"] = files.pdf
    return written


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def _ci(block: dict[str, Any]) -> str:
    low, high = block.get("ci95") or (None, None)
    return f"{_fmt(block.get('value'))} ({_fmt(low)}-{_fmt(high)})"


def print_summary(report: BuiltReport, console: Console | None = None) -> None:
    """The headline numbers and where the report is."""
    console = console or Console()
    metrics = report.metrics
    threshold = metrics["threshold"]
    title = (
        f"{metrics['level']}-level, positive class {metrics['positive_class']}, "
        f"n={metrics['n']} ({metrics['n_positive']} positive)"
    )
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value (95% CI)", justify="right")
    auc = metrics["auc"]
    table.add_row(f"AUC ({auc.get('method') or 'DeLong'})", _ci(auc))
    for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy"):
        table.add_row(name.replace("_", " "), _ci(metrics[name]))
    table.add_row(
        "threshold",
        f"{threshold['value']:.4f} ({threshold['rule']}, chosen on {threshold['chosen_on']})",
    )
    console.print(table)
    if threshold.get("exploratory"):
        console.print("[bold yellow]exploratory: the threshold was chosen on these same rows")
    html = report.files.get("html")
    console.print(f"report: {html if html else report.out}")
