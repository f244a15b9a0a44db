"""The statistics of the clinical validation report, as one JSON-serialisable dict.

Owns :func:`summarize`: which statistics the report holds, under which keys, with which
intervals. Never reads or writes a file, never renders, and never chooses the threshold (it
is chosen elsewhere, normally on the validation split, and passed in).

The key names of the returned dict are a contract with the code that renders the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

from usdcm.artifacts.metrics import Level
from usdcm.errors import MetricsError, UndefinedMetricError
from usdcm.metrics._arrays import require_both_classes
from usdcm.metrics.aggregate import (
    DEFAULT_SUBGROUP_COLUMNS,
    AggregatedCase,
    Row,
    aggregate,
    aggregation_rule,
    check_classes,
    parse_level,
)
from usdcm.metrics.bootstrap import DEFAULT_RESAMPLES, cluster_bootstrap
from usdcm.metrics.calibration import (
    DEFAULT_BINS,
    brier_score,
    expected_calibration_error,
    reliability,
)
from usdcm.metrics.decision_curve import REFERENCE as DECISION_CURVE_REFERENCE
from usdcm.metrics.decision_curve import decision_curve
from usdcm.metrics.delong import delong_auc, roc_auc
from usdcm.metrics.intervals import wilson
from usdcm.metrics.recalibration import recalibration_summary
from usdcm.metrics.sample_size import (
    DEFAULT_CONFIDENCE,
    DEFAULT_TARGET_WIDTH,
    precision_summary,
)
from usdcm.metrics.threshold import THRESHOLD_CONVENTION, ThresholdKind, parse_threshold_rule

DEFAULT_MIN_SUBGROUP_N = 20
"""A subgroup with fewer cases than this is flagged ``too_small``."""

DEFAULT_MIN_SUBGROUP_CLASS_N = 5
"""A subgroup with fewer positive, or fewer negative, cases than this is flagged ``too_small``."""

DEFAULT_FAILURES = 5
"""Number of false positives and of false negatives listed."""

CLUSTER_COLUMN = "patient_key"
"""The bootstrap's cluster."""

CLUSTERED_LEVELS = (Level.IMAGE, Level.SERIES)
"""Levels whose primary AUC interval is the patient-clustered bootstrap, not DeLong's.

Several images or series of one patient are correlated; DeLong's variance treats them as
independent and so comes out too narrow. Studies and patients are taken as independent.
"""

AUC_DIRECTION = "as given (higher score = positive class); never flipped"
"""How the AUC treats the score's direction (pROC's ``direction="auto"`` would flip it)."""


def summarize(
    rows: Iterable[Row],
    *,
    level: str | Level,
    classes: Sequence[str],
    positive_class: str,
    threshold: float,
    threshold_rule: str,
    threshold_chosen_on: str,
    exploratory: bool,
    subgroup_columns: Sequence[str] = DEFAULT_SUBGROUP_COLUMNS,
    n_bootstrap: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    min_subgroup_n: int = DEFAULT_MIN_SUBGROUP_N,
    min_subgroup_class_n: int = DEFAULT_MIN_SUBGROUP_CLASS_N,
    n_failures: int = DEFAULT_FAILURES,
    bins: int = DEFAULT_BINS,
    provenance: Mapping[str, Any] | None = None,
    calibration_rows: Iterable[Row] | None = None,
    calibration_on: str = "val",
    target_width: float = DEFAULT_TARGET_WIDTH,
) -> dict[str, Any]:
    """Every statistic of the validation report for one set of image predictions.

    Images are first grouped into cases at ``level`` (:func:`~usdcm.metrics.aggregate`).
    The binary statistics treat ``positive_class`` as positive and every other class as
    negative; the score is the case's mean ``prob_<positive_class>``, and a case is
    predicted positive when ``score >= threshold``.

    * ``auc``: the AUC with its DeLong interval (``delong_ci95``) and its clustered
      bootstrap interval (``bootstrap_ci95``); the primary ``ci95`` is the bootstrap one at
      image and series level (``method`` ``"patient-clustered bootstrap"``, since images
      of one patient are correlated) and DeLong's at study and patient level (``method``
      ``"delong"``). ``direction`` says that the score is never flipped.
    * ``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``accuracy``: ``k`` of ``n`` with
      a Wilson 95% interval; ``value`` and the interval are None when ``n`` is 0.
    * ``balanced_accuracy``: mean of sensitivity and specificity, clustered bootstrap 95%
      interval.
    * ``confusion_matrix``: rows are the true class, columns the predicted class, in the
      order ``[negative, positive]`` (the negative is the other class, or ``"rest"`` with
      more than two classes); ``normalized`` divides each row by its total (None for an
      empty row).
    * ``brier``, ``ece`` and ``reliability`` on the positive score (see
      :mod:`usdcm.metrics.calibration`).
    * ``threshold``: its value, rule, where it was chosen, ``exploratory`` and
      ``convention`` (:data:`~usdcm.metrics.threshold.THRESHOLD_CONVENTION`).
    * ``sample_size``: Buderer's cases needed for a ``target_width`` interval of
      sensitivity and specificity against the cases here, and the achieved interval widths
      (:func:`~usdcm.metrics.sample_size.precision_summary`).
    * ``decision_curve``: net benefit of the model, treat-all and treat-none at thresholds
      0.01 to 0.99 (:func:`~usdcm.metrics.decision_curve.decision_curve`).
    * ``recalibration``: None without ``calibration_rows``; otherwise logistic and isotonic
      recalibration fitted on ``calibration_rows`` only, grouped at the same ``level``, and
      scored on these rows (:func:`~usdcm.metrics.recalibration.recalibration_summary`).
    * ``subgroups``: per value of each subgroup column, the DeLong AUC (None when a class is
      absent) and ``too_small`` when the group has fewer than ``min_subgroup_n`` cases or
      fewer than ``min_subgroup_class_n`` positive or negative cases; ``reason`` says which.
    * ``failures``: the ``n_failures`` false positives with the highest score and false
      negatives with the lowest score (ties by id), with the images of each case.
    * ``multiclass``: None for two classes; otherwise one-vs-rest AUC per class and their
      macro average, with clustered bootstrap intervals.

    Every bootstrap resamples ``patient_key`` clusters, stratified by majority label, with
    ``n_bootstrap`` resamples seeded by ``seed`` (:func:`~usdcm.metrics.cluster_bootstrap`);
    ``bootstrap.skipped`` counts the resamples on which the binary AUC was undefined. NaN
    is written as None, so the result passes ``json.dumps(..., allow_nan=False)``.

    Parameters
    ----------
    rows : iterable of mapping
        Image-level prediction rows (see :mod:`usdcm.metrics.aggregate`).
    level : {"image", "series", "study", "patient"}
        Unit of a case.
    classes : sequence of str
        All class names, at least two.
    positive_class : str
        The class whose probability is the score.
    threshold : float
        Operating threshold on the positive score.
    threshold_rule : str
        The rule that chose ``threshold`` (see :func:`~usdcm.metrics.parse_threshold_rule`);
        a fixed rule must equal ``threshold``.
    threshold_chosen_on : str
        Where the threshold was chosen, such as ``"val"``.
    exploratory : bool
        True when the threshold was chosen on the data summarised here.
    subgroup_columns : sequence of str, default ("manufacturer", "model", "sex", "age_band")
        Columns that define subgroups; a row without the column counts as ``"unknown"``.
    n_bootstrap : int, default 2000
        Resamples of every bootstrap.
    seed : int, default 0
        Seed of every bootstrap.
    min_subgroup_n : int, default 20
        Fewest cases for a subgroup not to be ``too_small``.
    min_subgroup_class_n : int, default 5
        Fewest positive and fewest negative cases for a subgroup not to be ``too_small``.
    n_failures : int, default 5
        Length of each failure list.
    bins : int, default 10
        Equal-width bins of the ECE and the reliability diagram.
    provenance : mapping, optional
        Copied into ``provenance`` as it is; must itself be JSON-serialisable.
    calibration_rows : iterable of mapping, optional
        Image-level rows of held-out data (validation or out-of-fold), never the rows
        summarised here; recalibration is fitted on them alone. None or empty: no
        recalibration.
    calibration_on : str, default "val"
        Where ``calibration_rows`` come from, as the report names it.
    target_width : float, default 0.20
        Full width of the target 95% interval of sensitivity and specificity.

    Returns
    -------
    dict
        The report's statistics under the contract's keys.

    Raises
    ------
    MetricsError
        No rows, fewer than two classes, a ``positive_class`` not among them, a non-finite
        threshold, a bad threshold rule or option.
    AggregationError
        Rows that cannot be grouped (see :func:`~usdcm.metrics.aggregate`).

    Examples
    --------
    >>> rows = [
    ...     {"image_id": f"i{n}", "patient_key": f"p{n}", "study_key": f"s{n}",
    ...      "series_key": f"r{n}", "label": "abnormal" if n % 2 else "normal",
    ...      "prob_abnormal": str(p), "prob_normal": str(1 - p), "frames": "1",
    ...      "manufacturer": "X", "model": "M"}
    ...     for n, p in enumerate([0.1, 0.9, 0.3, 0.6, 0.7, 0.8])
    ... ]
    >>> summary = summarize(
    ...     rows, level="study", classes=["abnormal", "normal"], positive_class="abnormal",
    ...     threshold=0.5, threshold_rule="0.5", threshold_chosen_on="val",
    ...     exploratory=False, n_bootstrap=100,
    ... )
    >>> summary["n"], summary["n_positive"], round(summary["auc"]["value"], 4)
    (6, 3, 0.8889)
    >>> summary["confusion_matrix"]["counts"], summary["sensitivity"]["k"]
    ([[2, 1], [0, 3]], 3)
    >>> summary["failures"]["false_positives"][0]["id"]
    's4'
    >>> summary["auc"]["method"], summary["recalibration"] is None
    ('delong', True)
    >>> summary["sample_size"]["needed_positive"], summary["sample_size"]["below_target"]
    (4, True)
    """
    names = check_classes(classes)
    if len(names) < 2:
        message = f"classes are {names!r}; a validation summary needs at least two classes."
        raise MetricsError(message)
    if positive_class not in names:
        message = f"positive_class {positive_class!r} is not one of the classes {names}."
        raise MetricsError(message)
    if not math.isfinite(threshold):
        message = f"threshold is {threshold!r}; expected a finite probability such as 0.5."
        raise MetricsError(message)
    rule = parse_threshold_rule(threshold_rule)
    if rule.kind is ThresholdKind.FIXED and rule.value != threshold:
        message = (
            f"threshold is {threshold!r} but the rule {threshold_rule!r} fixes it at "
            f"{rule.value!r}; pass the threshold the rule chose."
        )
        raise MetricsError(message)
    for name, number, least in (
        ("min_subgroup_n", min_subgroup_n, 1),
        ("min_subgroup_class_n", min_subgroup_class_n, 0),
        ("n_failures", n_failures, 0),
    ):
        if number < least:
            message = f"{name} is {number!r}; expected a whole number of at least {least}."
            raise MetricsError(message)
    parsed_level = parse_level(level)
    row_list = list(rows)
    if not row_list:
        message = "there are no prediction rows to summarise; check the split and the labels."
        raise MetricsError(message)
    cases = aggregate(row_list, parsed_level, names, subgroup_columns=subgroup_columns)

    positive = np.array([case.label == positive_class for case in cases], dtype=np.bool_)
    scores = np.array([case.probs[positive_class] for case in cases], dtype=np.float64)
    clusters = np.array([case.patient_key for case in cases])
    predicted = scores >= threshold
    n = len(cases)
    n_positive = int(positive.sum())
    tp = int(np.sum(positive & predicted))
    fn = n_positive - tp
    fp = int(np.sum(~positive & predicted))
    tn = n - n_positive - fp

    def bootstrap(statistic: Callable[[Any, Any], float], labels: Any, values: Any) -> Any:
        return cluster_bootstrap(
            labels, values, clusters, statistic, n_resamples=n_bootstrap, seed=seed
        )

    auc_bootstrap = bootstrap(roc_auc, positive, scores)
    auc = _auc_summary(parsed_level, positive, scores, list(auc_bootstrap.ci95))
    sensitivity = _proportion(tp, n_positive)
    specificity = _proportion(tn, tn + fp)
    balanced_bootstrap = bootstrap(_balanced_accuracy(threshold), positive, scores)
    negative_name = names[1 - names.index(positive_class)] if len(names) == 2 else "rest"

    summary: dict[str, Any] = {
        "level": str(parsed_level),
        "positive_class": positive_class,
        "classes": names,
        "n": n,
        "n_positive": n_positive,
        "prevalence": n_positive / n,
        "aggregation": aggregation_rule(parsed_level),
        "auc": auc,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": _proportion(tp, tp + fp),
        "npv": _proportion(tn, tn + fn),
        "accuracy": _proportion(tp + tn, n),
        "balanced_accuracy": {
            "value": balanced_bootstrap.estimate,
            "ci95": list(balanced_bootstrap.ci95),
        },
        "threshold": {
            "value": threshold,
            "rule": str(rule),
            "chosen_on": threshold_chosen_on,
            "exploratory": exploratory,
            "convention": THRESHOLD_CONVENTION,
        },
        "confusion_matrix": _confusion(tn, fp, fn, tp, negative_name, positive_class),
        **_curves(positive, scores),
        "brier": brier_score(positive, scores),
        "ece": {"value": expected_calibration_error(positive, scores, bins), "bins": bins},
        "reliability": vars(reliability(positive, scores, bins)),
        "counts": _counts(row_list, cases),
        "bootstrap": {
            "resamples": n_bootstrap,
            "seed": seed,
            "cluster": CLUSTER_COLUMN,
            "stratified": True,
            "skipped": auc_bootstrap.skipped,
        },
        "subgroups": {
            column: _subgroups(
                cases, positive, scores, column, min_subgroup_n, min_subgroup_class_n
            )
            for column in subgroup_columns
        },
        "failures": _failures(cases, positive, scores, predicted, n_failures),
        "multiclass": (_multiclass(cases, names, bootstrap) if len(names) > 2 else None),
        "sample_size": precision_summary(
            sensitivity["value"],
            specificity["value"],
            n_positive,
            n - n_positive,
            {
                "sensitivity": sensitivity["ci95"],
                "specificity": specificity["ci95"],
                "auc": auc["ci95"],
            },
            target_width=target_width,
            confidence=DEFAULT_CONFIDENCE,
        ),
        "decision_curve": _decision_curve(positive, scores),
        "recalibration": _recalibration(
            calibration_rows,
            parsed_level,
            names,
            positive_class,
            positive,
            scores,
            calibration_on,
            bins,
        ),
        "provenance": dict(provenance or {}),
    }
    return dict(_jsonable(summary))


def _balanced_accuracy(threshold: float) -> Callable[[Any, Any], float]:
    def statistic(labels: Any, scores: Any) -> float:
        positive = np.asarray(labels, dtype=np.bool_)
        require_both_classes(positive, "balanced accuracy")
        predicted = np.asarray(scores) >= threshold
        return float((predicted[positive].mean() + (~predicted[~positive]).mean()) / 2)

    return statistic


def _auc_summary(
    level: Level,
    positive: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
    bootstrap_ci95: list[float],
) -> dict[str, Any]:
    delong = _auc_block(positive, scores)
    clustered = level in CLUSTERED_LEVELS
    return {
        "value": delong["value"],
        "ci95": bootstrap_ci95 if clustered else delong["ci95"],
        "method": "patient-clustered bootstrap" if clustered else "delong",
        "delong_ci95": delong["ci95"],
        "bootstrap_ci95": bootstrap_ci95,
        "direction": AUC_DIRECTION,
    }


def _decision_curve(
    positive: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]
) -> dict[str, Any]:
    curve = decision_curve(positive, scores)
    return {**vars(curve), "reference": DECISION_CURVE_REFERENCE}


def _recalibration(
    rows: Iterable[Row] | None,
    level: Level,
    names: list[str],
    positive_class: str,
    positive: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
    fitted_on: str,
    bins: int,
) -> dict[str, Any] | None:
    fit_rows = list(rows or [])
    if not fit_rows:
        return None
    fit_cases = aggregate(fit_rows, level, names, subgroup_columns=())
    return recalibration_summary(
        [case.label == positive_class for case in fit_cases],
        [case.probs[positive_class] for case in fit_cases],
        positive,
        scores,
        fitted_on=fitted_on,
        bins=bins,
    )


def _auc_block(positive: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]) -> dict[str, Any]:
    try:
        result = delong_auc(positive, scores)
    except UndefinedMetricError:
        return {"value": None, "ci95": [None, None]}
    return {"value": result.auc, "ci95": list(result.ci95)}


def _proportion(k: int, n: int) -> dict[str, Any]:
    return {"value": k / n if n else None, "ci95": list(wilson(k, n)), "k": k, "n": n}


def _confusion(
    tn: int, fp: int, fn: int, tp: int, negative_name: str, positive_name: str
) -> dict[str, Any]:
    counts = [[tn, fp], [fn, tp]]
    normalized = [
        [value / sum(row) for value in row] if sum(row) else [None, None] for row in counts
    ]
    return {"labels": [negative_name, positive_name], "counts": counts, "normalized": normalized}


def _curves(positive: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]) -> dict[str, Any]:
    n_positive = int(positive.sum())
    if 0 < n_positive < positive.size:
        fpr, tpr, _ = roc_curve(positive, scores)
        roc = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    else:
        roc = {"fpr": [], "tpr": []}
    if n_positive:
        precision, recall, _ = precision_recall_curve(positive, scores)
        ap = float(average_precision_score(positive, scores))
        pr = {"precision": precision.tolist(), "recall": recall.tolist(), "ap": ap}
    else:
        pr = {"precision": [], "recall": [], "ap": None}
    return {"roc": roc, "pr": pr}


def _counts(rows: list[Row], cases: list[AggregatedCase]) -> dict[str, int]:
    def distinct(column: str) -> int:
        return len({value for row in rows if (value := (row.get(column) or "").strip())})

    return {
        "patients": distinct("patient_key"),
        "studies": distinct("study_key"),
        "series": distinct("series_key"),
        "images": sum(case.n_images for case in cases),
        "frames": sum(case.n_frames for case in cases),
    }


def _subgroups(
    cases: list[AggregatedCase],
    positive: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
    column: str,
    min_n: int,
    min_class_n: int,
) -> list[dict[str, Any]]:
    values = np.array([case.subgroups[column] for case in cases])
    entries = []
    for group in sorted(set(values.tolist())):
        member = values == group
        n = int(member.sum())
        n_positive = int(positive[member].sum())
        n_negative = n - n_positive
        reasons = []
        if n < min_n:
            reasons.append(f"{n} cases, fewer than {min_n}")
        if n_positive < min_class_n:
            reasons.append(f"{n_positive} positive cases, fewer than {min_class_n}")
        if n_negative < min_class_n:
            reasons.append(f"{n_negative} negative cases, fewer than {min_class_n}")
        entries.append(
            {
                "group": group,
                "n": n,
                "n_positive": n_positive,
                "prevalence": n_positive / n,
                "auc": _auc_block(positive[member], scores[member]),
                "too_small": bool(reasons),
                "reason": "; ".join(reasons),
            }
        )
    return entries


def _failures(
    cases: list[AggregatedCase],
    positive: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
    predicted: npt.NDArray[np.bool_],
    limit: int,
) -> dict[str, list[dict[str, Any]]]:
    def listed(mask: npt.NDArray[np.bool_], sign: float) -> list[dict[str, Any]]:
        chosen = sorted(np.flatnonzero(mask), key=lambda i: (sign * scores[i], cases[i].id))
        return [
            {
                "id": cases[i].id,
                "prob": float(scores[i]),
                "label": cases[i].label,
                "image_ids": list(cases[i].image_ids),
            }
            for i in chosen[:limit]
        ]

    return {
        "false_positives": listed(~positive & predicted, -1.0),
        "false_negatives": listed(positive & ~predicted, 1.0),
    }


def _multiclass(
    cases: list[AggregatedCase],
    names: list[str],
    bootstrap: Callable[[Callable[[Any, Any], float], Any, Any], Any],
) -> dict[str, Any]:
    codes = np.array([names.index(case.label) for case in cases], dtype=np.intp)
    matrix = np.array([[case.probs[name] for name in names] for case in cases])

    def one_vs_rest(index: int) -> Callable[[Any, Any], float]:
        def statistic(labels: Any, scores: Any) -> float:
            return roc_auc(np.asarray(labels) == index, np.asarray(scores)[:, index])

        return statistic

    def macro(labels: Any, scores: Any) -> float:
        return float(np.mean([one_vs_rest(index)(labels, scores) for index in range(len(names))]))

    per_class = {}
    for index, name in enumerate(names):
        result = bootstrap(one_vs_rest(index), codes, matrix)
        per_class[name] = {"value": result.estimate, "ci95": list(result.ci95)}
    result = bootstrap(macro, codes, matrix)
    return {
        "per_class": per_class,
        "macro": {"value": result.estimate, "ci95": list(result.ci95)},
        "method": "one-vs-rest, bootstrap CI",
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return value
