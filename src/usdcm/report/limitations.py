"""Limitations the report flags by itself, from the metrics and the context.

Owns the rules and their thresholds (small n, wide CI, single site, prevalence shift,
exploratory threshold, too-small subgroups, failed or unchecked leakage, a training manifest
changed since training, undefined AUC, no reference standard stated, fewer cases than the
target precision needs); never renders text for a format and never changes a metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from usdcm.report._format import NA, as_float, as_int, ci_bounds, fmt_num, get
from usdcm.report.checks import NOT_CHECKABLE, leakage_status, manifest_status
from usdcm.report.context import ReportContext

MIN_N = 100
"""Fewer cases than this at the reported level is a small sample."""

MIN_POSITIVES = 30
"""Fewer positive cases than this is a small sample."""

MAX_AUC_CI_WIDTH = 0.2
"""An AUC confidence interval wider than this is flagged."""

MAX_PREVALENCE_SHIFT = 0.1
"""A prevalence difference between two splits larger than this is flagged."""

_EPS = 1e-9  # a value exactly at a threshold (up to float rounding) is not flagged


@dataclass(frozen=True)
class Limitation:
    """One automatically flagged limitation.

    Parameters
    ----------
    code : str
        Stable identifier, e.g. ``"small_n"``; tests and tools match on it.
    message : str
        One or two plain sentences for the reader, with the numbers that triggered it.
    """

    code: str
    message: str


def flag_limitations(
    metrics: Mapping[str, Any], context: ReportContext | None = None
) -> list[Limitation]:
    """Flag the limitations that ``metrics`` and ``context`` show, in a fixed order.

    Codes, in order: ``small_n`` (n < :data:`MIN_N` or positives < :data:`MIN_POSITIVES`),
    ``auc_undefined`` (no AUC), ``wide_ci`` (AUC CI wider than :data:`MAX_AUC_CI_WIDTH`),
    ``single_site`` (one manufacturer or one model, from ``context.data`` or else from the
    ``manufacturer``/``model`` subgroups), ``prevalence_shift`` (two splits whose prevalences
    differ by more than :data:`MAX_PREVALENCE_SHIFT`), ``exploratory_threshold``,
    ``small_subgroups`` (a subgroup marked ``too_small``), then one of ``leakage_failed``,
    ``leakage_not_checkable`` or ``leakage_not_checked`` (any other status, such as an older
    file's ``"not run"``) for ``context.split["leakage_check"]`` given and not ``"passed"``
    (its message gives the shared counts, never a key, and the check's detail), and
    ``manifest_changed`` (``context.model["manifest_check"]`` is ``"changed"``: the training
    manifest's hash differs from the checkpoint's), ``reference_standard_missing``
    (``context.reference_standard`` is empty: how the labels were established is not stated)
    and ``sample_size_below_target`` (``metrics["sample_size"]["below_target"]`` is true). A
    rule whose inputs are missing does not fire.

    Parameters
    ----------
    metrics : mapping
        The dict of :func:`usdcm.metrics.summarize`.
    context : ReportContext, optional
        Supplies the manufacturers, prevalence by split, leakage check and manifest check.

    Returns
    -------
    list of Limitation
        Empty when nothing is flagged.

    Examples
    --------
    >>> metrics = {"n": 40, "n_positive": 12, "auc": {"value": 0.8, "ci95": [0.6, 0.95]}}
    >>> context = ReportContext(reference_standard="Histopathology")
    >>> [item.code for item in flag_limitations(metrics, context)]
    ['small_n', 'wide_ci']
    """
    context = context or ReportContext()
    flags = [
        _small_n(metrics),
        _auc_undefined(metrics),
        _wide_ci(metrics),
        _single_site(metrics, context),
        _prevalence_shift(context),
        _exploratory_threshold(metrics),
        _small_subgroups(metrics),
        _leakage(context),
        _manifest_changed(context),
        _reference_standard_missing(context),
        _sample_size_below_target(metrics),
    ]
    return [flag for flag in flags if flag is not None]


def _small_n(metrics: Mapping[str, Any]) -> Limitation | None:
    n, positives = as_int(metrics.get("n")), as_int(metrics.get("n_positive"))
    reasons = []
    if n is not None and n < MIN_N:
        reasons.append(f"n = {n} (fewer than {MIN_N})")
    if positives is not None and positives < MIN_POSITIVES:
        reasons.append(f"{positives} positives (fewer than {MIN_POSITIVES})")
    if not reasons:
        return None
    level = f" at the {metrics['level']} level" if metrics.get("level") else ""
    return Limitation(
        "small_n",
        f"Small test set{level}: {' and '.join(reasons)}. Estimates are imprecise and may "
        "not generalise.",
    )


def _auc_undefined(metrics: Mapping[str, Any]) -> Limitation | None:
    if "auc" not in metrics or as_float(get(metrics, "auc", "value")) is not None:
        return None
    return Limitation(
        "auc_undefined",
        "The AUC could not be computed (for example, the test set holds only one class).",
    )


def _wide_ci(metrics: Mapping[str, Any]) -> Limitation | None:
    bounds = ci_bounds(get(metrics, "auc", "ci95"))
    if bounds is None or bounds[1] - bounds[0] <= MAX_AUC_CI_WIDTH + _EPS:
        return None
    return Limitation(
        "wide_ci",
        f"Wide confidence interval: the AUC 95% CI {fmt_num(bounds[0])}–{fmt_num(bounds[1])} "
        f"spans {bounds[1] - bounds[0]:.3f} (more than {MAX_AUC_CI_WIDTH}).",
    )


def _names(value: object) -> list[str] | None:
    if isinstance(value, Mapping):
        return [str(name) for name in value]
    if isinstance(value, Sequence) and not isinstance(value, str):
        names = []
        for item in value:
            group = get(item, "group") if isinstance(item, Mapping) else item
            names.append(str(group))
        return names
    return None


def _single_site(metrics: Mapping[str, Any], context: ReportContext) -> Limitation | None:
    found = []
    for key in ("manufacturers", "models"):
        attribute = key[:-1]
        names = _names(context.data.get(key))
        if names is None:
            names = _names(get(metrics, "subgroups", attribute))
        if names is not None and len(set(names)) == 1:
            found.append(f"one {attribute} ({names[0]})")
    if not found:
        return None
    return Limitation(
        "single_site",
        f"Single site or vendor: all images come from {' and '.join(found)}. Performance on "
        "other scanners and sites is unknown.",
    )


def _prevalence_shift(context: ReportContext) -> Limitation | None:
    known = {
        str(split): value
        for split, raw in context.prevalence_by_split.items()
        if (value := as_float(raw)) is not None
    }
    if len(known) < 2:
        return None
    low = min(known, key=lambda split: known[split])
    high = max(known, key=lambda split: known[split])
    if known[high] - known[low] <= MAX_PREVALENCE_SHIFT + _EPS:
        return None
    shown = ", ".join(f"{split} {fmt_num(value)}" for split, value in known.items())
    return Limitation(
        "prevalence_shift",
        f"Prevalence shift between splits ({shown}): {high} and {low} differ by "
        f"{known[high] - known[low]:.3f} (more than {MAX_PREVALENCE_SHIFT}). PPV and NPV do "
        "not transfer between them.",
    )


def _exploratory_threshold(metrics: Mapping[str, Any]) -> Limitation | None:
    if get(metrics, "threshold", "exploratory") is not True:
        return None
    chosen_on = get(metrics, "threshold", "chosen_on") or "the test set"
    return Limitation(
        "exploratory_threshold",
        f"Exploratory threshold: it was chosen on {chosen_on}, so sensitivity, specificity, "
        "PPV and NPV at it are optimistic and need confirmation on independent data.",
    )


def _small_subgroups(metrics: Mapping[str, Any]) -> Limitation | None:
    subgroups = metrics.get("subgroups")
    if not isinstance(subgroups, Mapping):
        return None
    small = [
        f"{attribute}={get(row, 'group')} (n={get(row, 'n')})"
        for attribute, rows in subgroups.items()
        if isinstance(rows, Sequence)
        for row in rows
        if get(row, "too_small") is True
    ]
    if not small:
        return None
    return Limitation(
        "small_subgroups",
        f"Subgroups too small to estimate reliably: {', '.join(small)}.",
    )


def _sentence(text: str) -> str:
    """``text`` ending in a full stop (empty stays empty)."""
    text = text.strip()
    return text if not text or text.endswith((".", "!", "?")) else f"{text}."


def _leakage(context: ReportContext) -> Limitation | None:
    check = leakage_status(context.split)
    if check is None or check.passed:
        return None
    detail = _sentence(check.detail)
    counts = check.counts()
    if check.failed:
        shared = (
            f"{counts} of the evaluated data were also in training or validation"
            if counts
            else "evaluated data were also in training or validation"
        )
        return Limitation(
            "leakage_failed",
            " ".join(
                part
                for part in (
                    f"Leakage check failed: {shared}.",
                    detail,
                    "Test results are optimistic: they do not validate the model on "
                    "unseen patients.",
                )
                if part
            ),
        )
    if check.status == NOT_CHECKABLE:
        found = (
            f"What could be compared shared {counts} with training or validation." if counts else ""
        )
        return Limitation(
            "leakage_not_checkable",
            " ".join(
                part
                for part in (
                    "Leakage could not be checked.",
                    detail,
                    found,
                    "Test results may be optimistic if a patient's images were also trained "
                    "or validated on.",
                )
                if part
            ),
        )
    return Limitation(
        "leakage_not_checked",
        f"Patient-level leakage check: {check.status or NA}. Test results may be optimistic "
        "if a patient's images sit in more than one split.",
    )


def _manifest_changed(context: ReportContext) -> Limitation | None:
    check = manifest_status(context.model)
    if check is None or not check.changed:
        return None
    return Limitation(
        "manifest_changed",
        "The training manifest changed after training: the checkpoint recorded sha256 "
        f"{check.expected_sha256 or NA}, evaluation read {check.actual_sha256 or NA} "
        "(allowed by --allow-changed-manifest). Labels, splits or images may differ from "
        "those the model was trained and validated on; retrain on the current manifest or "
        "restore the one the model was trained on.",
    )


def _reference_standard_missing(context: ReportContext) -> Limitation | None:
    if context.reference_standard.strip():
        return None
    return Limitation(
        "reference_standard_missing",
        "No reference standard is stated: how the labels were established, and by whom, is "
        "not recorded, so the accuracy figures cannot be judged against it. Pass "
        "--reference-standard or set reference_standard in the training config.",
    )


def _sample_size_below_target(metrics: Mapping[str, Any]) -> Limitation | None:
    size = metrics.get("sample_size")
    if get(size, "below_target") is not True:
        return None
    needed_pos, needed_neg = (
        as_int(get(size, "needed_positive")),
        as_int(get(size, "needed_negative")),
    )
    have_pos, have_neg = as_int(get(size, "n_positive")), as_int(get(size, "n_negative"))
    width = as_float(get(size, "target_width"))
    target = f" for a 95% CI of full width {width:.2f}" if width is not None else ""
    counts = ""
    if None not in (needed_pos, needed_neg, have_pos, have_neg):
        counts = (
            f": {have_pos} positive and {have_neg} negative cases evaluated, "
            f"{needed_pos} and {needed_neg} needed"
        )
    return Limitation(
        "sample_size_below_target",
        f"The evaluated set is below the sample size{target} of sensitivity and specificity"
        f"{counts} (Buderer's method). The intervals are wider than that target.",
    )
