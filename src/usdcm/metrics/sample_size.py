"""Sample size and precision: how many cases a target confidence-interval width needs.

Owns Buderer's (1996) sample size for sensitivity and specificity and the comparison of a
report's achieved interval widths with the target. Never computes the intervals themselves
(:mod:`usdcm.metrics.intervals` and :mod:`usdcm.metrics.delong` do) and never decides what
the target is beyond its default.

Reference: N. M. F. Buderer, "Statistical methodology: I. Incorporating the prevalence of
disease into the sample size calculation for sensitivity and specificity", Academic
Emergency Medicine 3(9), 1996, 895-900. With ``d`` the half-width of the interval and
``z`` the normal quantile of the confidence level, a sensitivity ``Se`` needs
``z**2 * Se * (1 - Se) / d**2`` positive cases, a specificity ``Sp`` needs
``z**2 * Sp * (1 - Sp) / d**2`` negative cases, and at prevalence ``P`` the study needs
``max(n_positive / P, n_negative / (1 - P))`` cases in all; each is rounded up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from usdcm.errors import MetricsError
from usdcm.metrics.intervals import z_value

METHOD = "Buderer 1996"
"""The name of the method, as it appears in ``metrics.json``."""

DEFAULT_TARGET_WIDTH = 0.20
"""The full width of the target confidence interval (0.20 is +/-0.10)."""

DEFAULT_CONFIDENCE = 0.95
"""The confidence level of the target interval."""

EXPECTED_RANGE = (0.5, 0.99)
"""Expected sensitivity and specificity are clipped to this range before use.

Below 0.5 a test is worse than chance; at 1.0 the formula asks for no case at all.
"""

_DIGITS = 9
"""A count is rounded to this many decimals before it is rounded up (34.000000000001 is 34)."""


@dataclass(frozen=True)
class SampleSize:
    """Cases needed for a target interval width of sensitivity and specificity.

    Attributes
    ----------
    expected_sensitivity, expected_specificity : float
        The values the calculation assumes.
    prevalence : float
        The prevalence the total assumes.
    target_width : float
        Full width of the target confidence interval.
    confidence : float
        Confidence level of the target interval.
    needed_positive, needed_negative : int
        Positive and negative cases needed.
    needed_total : int or None
        Cases needed in all at ``prevalence``; None when the prevalence is 0 or 1.
    """

    expected_sensitivity: float
    expected_specificity: float
    prevalence: float
    target_width: float
    confidence: float
    needed_positive: int
    needed_negative: int
    needed_total: int | None


def cases_for_proportion(
    proportion: float,
    target_width: float = DEFAULT_TARGET_WIDTH,
    confidence: float = DEFAULT_CONFIDENCE,
) -> int:
    """Cases needed to estimate ``proportion`` within a full interval width ``target_width``.

    ``z**2 * p * (1 - p) / d**2`` rounded up, with ``d = target_width / 2``: the normal
    (Wald) approximation that Buderer's method uses.

    Parameters
    ----------
    proportion : float
        The expected proportion, in [0, 1].
    target_width : float, default 0.20
        Full width of the interval, in (0, 1].
    confidence : float, default 0.95
        Two-sided confidence level.

    Returns
    -------
    int

    Raises
    ------
    MetricsError
        A proportion outside [0, 1], a width outside (0, 1] or a confidence outside (0, 1).

    Examples
    --------
    >>> cases_for_proportion(0.9)  # 1.959964**2 * 0.09 / 0.1**2 = 34.57
    35
    >>> cases_for_proportion(0.5, target_width=0.1)  # 384.1
    385
    """
    _check_width(target_width)
    if not 0 <= proportion <= 1:
        message = f"proportion is {proportion!r}; expected an expected value in [0, 1]."
        raise MetricsError(message)
    z = z_value(confidence)
    half = target_width / 2
    return _round_up(z * z * proportion * (1 - proportion) / (half * half))


def buderer(
    expected_sensitivity: float,
    expected_specificity: float,
    prevalence: float,
    *,
    target_width: float = DEFAULT_TARGET_WIDTH,
    confidence: float = DEFAULT_CONFIDENCE,
) -> SampleSize:
    """Buderer's sample size for sensitivity and specificity at one prevalence.

    Parameters
    ----------
    expected_sensitivity, expected_specificity : float
        The expected values, in [0, 1].
    prevalence : float
        Expected fraction of positive cases, in [0, 1].
    target_width : float, default 0.20
        Full width of the target interval of each.
    confidence : float, default 0.95
        Two-sided confidence level.

    Returns
    -------
    SampleSize
        The total is ``max(n_pos / P, n_neg / (1 - P))`` of the unrounded counts, rounded
        up; None when the prevalence is 0 or 1.

    Raises
    ------
    MetricsError
        A value outside its range.

    Examples
    --------
    >>> size = buderer(0.9, 0.8, 0.25)
    >>> size.needed_positive, size.needed_negative, size.needed_total
    (35, 62, 139)
    """
    if not 0 <= prevalence <= 1:
        message = f"prevalence is {prevalence!r}; expected a fraction in [0, 1]."
        raise MetricsError(message)
    _check_width(target_width)
    z = z_value(confidence)
    half = target_width / 2
    raw = []
    for name, value in (
        ("expected_sensitivity", expected_sensitivity),
        ("expected_specificity", expected_specificity),
    ):
        if not 0 <= value <= 1:
            message = f"{name} is {value!r}; expected a proportion in [0, 1]."
            raise MetricsError(message)
        raw.append(z * z * value * (1 - value) / (half * half))
    total = None
    if 0 < prevalence < 1:
        total = _round_up(max(raw[0] / prevalence, raw[1] / (1 - prevalence)))
    return SampleSize(
        expected_sensitivity=expected_sensitivity,
        expected_specificity=expected_specificity,
        prevalence=prevalence,
        target_width=target_width,
        confidence=confidence,
        needed_positive=_round_up(raw[0]),
        needed_negative=_round_up(raw[1]),
        needed_total=total,
    )


def interval_width(ci95: Sequence[float | None] | None) -> float | None:
    """The full width ``upper - lower`` of an interval; None when a bound is missing or NaN.

    >>> round(interval_width([0.7, 0.9]), 12), interval_width([None, None])
    (0.2, None)
    """
    if ci95 is None or len(ci95) != 2:
        return None
    lower, upper = ci95
    if lower is None or upper is None or not (math.isfinite(lower) and math.isfinite(upper)):
        return None
    return float(upper - lower)


def precision_summary(
    sensitivity: float | None,
    specificity: float | None,
    n_positive: int,
    n_negative: int,
    achieved: Mapping[str, Sequence[float | None] | None],
    *,
    target_width: float = DEFAULT_TARGET_WIDTH,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """The ``sample_size`` block of a report: cases needed against cases there, and why.

    The expected sensitivity and specificity are the report's own point estimates clipped
    to :data:`EXPECTED_RANGE` (0.5 where an estimate is undefined, the most demanding
    value); the prevalence is the report's (``n_positive / (n_positive + n_negative)``).

    Parameters
    ----------
    sensitivity, specificity : float or None
        The report's point estimates.
    n_positive, n_negative : int
        Positive and negative cases of the report.
    achieved : mapping of str to interval
        The report's intervals by name (``"sensitivity"``, ``"specificity"``, ``"auc"``);
        their full widths are reported.
    target_width : float, default 0.20
        Full width of the target interval of sensitivity and specificity.
    confidence : float, default 0.95
        Two-sided confidence level.

    Returns
    -------
    dict
        ``method``, ``confidence``, ``target_width``, ``expected_sensitivity``,
        ``expected_specificity``, ``needed_positive``, ``needed_negative``,
        ``needed_total``, ``n_positive``, ``n_negative``, ``achieved_width`` (by name),
        ``below_target`` (fewer positive or fewer negative cases than needed) and
        ``explanation``, one plain sentence.

    Examples
    --------
    >>> block = precision_summary(0.9, 0.8, 20, 60, {"sensitivity": [0.7, 0.97]})
    >>> block["needed_positive"], block["needed_negative"], block["below_target"]
    (35, 62, True)
    >>> round(block["achieved_width"]["sensitivity"], 2)
    0.27
    """
    n = n_positive + n_negative
    if n_positive < 0 or n_negative < 0 or n == 0:
        message = (
            f"precision_summary got {n_positive} positive and {n_negative} negative cases; "
            "expected non-negative counts, at least one case."
        )
        raise MetricsError(message)
    prevalence = n_positive / n
    expected_sensitivity = _expected(sensitivity)
    expected_specificity = _expected(specificity)
    size = buderer(
        expected_sensitivity,
        expected_specificity,
        prevalence,
        target_width=target_width,
        confidence=confidence,
    )
    below = n_positive < size.needed_positive or n_negative < size.needed_negative
    return {
        "method": METHOD,
        "confidence": confidence,
        "target_width": target_width,
        "expected_sensitivity": expected_sensitivity,
        "expected_specificity": expected_specificity,
        "needed_positive": size.needed_positive,
        "needed_negative": size.needed_negative,
        "needed_total": size.needed_total,
        "n_positive": n_positive,
        "n_negative": n_negative,
        "achieved_width": {name: interval_width(ci) for name, ci in achieved.items()},
        "below_target": below,
        "explanation": _explanation(size, n_positive, n_negative, below),
    }


def _explanation(size: SampleSize, n_positive: int, n_negative: int, below: bool) -> str:
    level = f"{size.confidence:.0%}"
    half = f"{size.target_width / 2:.2f}".rstrip("0").rstrip(".")
    total = (
        f" ({size.needed_total} cases in all at this prevalence)"
        if size.needed_total is not None
        else ""
    )
    verdict = "fewer than the target needs" if below else "enough for the target"
    return (
        f"To estimate sensitivity and specificity within +/-{half} ({level} confidence) at "
        f"the expected values {size.expected_sensitivity:.2f} and "
        f"{size.expected_specificity:.2f}, Buderer's method needs {size.needed_positive} "
        f"positive and {size.needed_negative} negative cases{total}; this set has "
        f"{n_positive} positive and {n_negative} negative cases, {verdict}."
    )


def _expected(value: float | None) -> float:
    if value is None or not math.isfinite(value):
        return EXPECTED_RANGE[0]
    return min(max(float(value), EXPECTED_RANGE[0]), EXPECTED_RANGE[1])


def _check_width(target_width: float) -> None:
    if not 0 < target_width <= 1:
        message = (
            f"target_width is {target_width!r}; expected the full width of an interval in "
            "(0, 1], such as 0.2 for +/-0.1."
        )
        raise MetricsError(message)


def _round_up(value: float) -> int:
    return math.ceil(round(value, _DIGITS))
