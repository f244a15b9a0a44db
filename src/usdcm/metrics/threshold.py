"""Operating thresholds: parse a rule such as ``"youden"`` and pick the threshold it names.

Owns the threshold rules and the choice of a threshold on one set of labelled scores
(normally the validation split). Never decides which split a threshold is chosen on, and
never evaluates the threshold it picks.

A case is predicted positive when its score is at or above the threshold
(``score >= threshold``), everywhere in ``usdcm.metrics``. A chosen threshold is one of the
observed scores, never a midpoint between two of them (R's pROC uses midpoints): see
:data:`THRESHOLD_CONVENTION`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from usdcm.errors import ThresholdRuleError, UndefinedMetricError
from usdcm.metrics._arrays import binary_labels, float_scores, require_both_classes


class ThresholdKind(StrEnum):
    """How a threshold is set: a fixed value, Youden's J, or a target sensitivity."""

    FIXED = "fixed"
    YOUDEN = "youden"
    SENSITIVITY = "sens"


@dataclass(frozen=True)
class ThresholdRule:
    """A parsed threshold rule.

    Attributes
    ----------
    kind : ThresholdKind
        ``fixed``, ``youden`` or ``sens``.
    value : float
        The fixed threshold, or the target sensitivity; NaN for ``youden``.
    """

    kind: ThresholdKind
    value: float = math.nan

    def __str__(self) -> str:
        """The rule as it is written: ``youden``, ``sens:0.9`` or ``0.5``.

        >>> str(parse_threshold_rule(" SENS:0.90 ")), str(parse_threshold_rule("0.5"))
        ('sens:0.9', '0.5')
        """
        if self.kind is ThresholdKind.YOUDEN:
            return "youden"
        if self.kind is ThresholdKind.SENSITIVITY:
            return f"sens:{self.value!r}"
        return repr(self.value)


THRESHOLD_CONVENTION = (
    "Candidate thresholds are the observed scores of the cases the threshold is chosen on, "
    "not midpoints between consecutive scores (as in R's pROC), and a case is predicted "
    "positive when its score is at or above the threshold (score >= threshold); a fixed "
    "threshold is used as given."
)
"""Where candidate thresholds lie and which side of one is positive, in one sentence."""


RULE_HELP = "'youden', 'sens:<target in (0, 1]>' such as 'sens:0.9', or a number in [0, 1]"
"""The accepted spellings of a threshold rule, for messages and ``--help``."""


def parse_threshold_rule(text: str | ThresholdRule) -> ThresholdRule:
    """Parse ``"youden"``, ``"sens:0.9"`` or a fixed threshold such as ``"0.5"``.

    Case and surrounding spaces are ignored.

    Parameters
    ----------
    text : str or ThresholdRule
        The rule; a :class:`ThresholdRule` is returned unchanged.

    Returns
    -------
    ThresholdRule

    Raises
    ------
    ThresholdRuleError
        Any other text, a fixed threshold outside [0, 1], or a target sensitivity outside
        (0, 1].

    Examples
    --------
    >>> parse_threshold_rule("youden")
    ThresholdRule(kind=<ThresholdKind.YOUDEN: 'youden'>, value=nan)
    >>> parse_threshold_rule("sens:0.9")
    ThresholdRule(kind=<ThresholdKind.SENSITIVITY: 'sens'>, value=0.9)
    >>> parse_threshold_rule("0.5")
    ThresholdRule(kind=<ThresholdKind.FIXED: 'fixed'>, value=0.5)
    >>> parse_threshold_rule("best")
    Traceback (most recent call last):
    ...
    usdcm.errors.ThresholdRuleError: threshold rule 'best' is not understood; expected 'youden', 'sens:<target in (0, 1]>' such as 'sens:0.9', or a number in [0, 1].
    """  # noqa: E501
    if isinstance(text, ThresholdRule):
        return text
    cleaned = text.strip().lower()
    if cleaned == ThresholdKind.YOUDEN:
        return ThresholdRule(ThresholdKind.YOUDEN)
    prefix = f"{ThresholdKind.SENSITIVITY}:"
    if cleaned.startswith(prefix):
        target = _number(text, cleaned.removeprefix(prefix))
        if not 0 < target <= 1:
            message = (
                f"threshold rule {text!r} asks for sensitivity {target!r}; "
                "expected a target in (0, 1], such as 'sens:0.9'."
            )
            raise ThresholdRuleError(message)
        return ThresholdRule(ThresholdKind.SENSITIVITY, target)
    value = _number(text, cleaned)
    if not 0 <= value <= 1:
        message = f"threshold rule {text!r} is outside [0, 1]; expected a probability like 0.5."
        raise ThresholdRuleError(message)
    return ThresholdRule(ThresholdKind.FIXED, value)


def _number(text: str, part: str) -> float:
    try:
        value = float(part)
    except ValueError as err:
        message = f"threshold rule {text!r} is not understood; expected {RULE_HELP}."
        raise ThresholdRuleError(message) from err
    if not math.isfinite(value):
        message = f"threshold rule {text!r} is not a finite number; expected {RULE_HELP}."
        raise ThresholdRuleError(message)
    return value


def choose_threshold(
    labels: npt.ArrayLike, scores: npt.ArrayLike, rule: str | ThresholdRule
) -> float:
    """The threshold that ``rule`` picks on these labelled scores.

    Candidate thresholds are the distinct scores; a case is positive when
    ``score >= threshold``.

    * ``youden``: maximises Youden's J = sensitivity + specificity - 1. J is compared
      exactly (as the integer ``TP * N - FP * P``); among thresholds with the same J the
      highest is returned, the one that calls the fewest cases positive.
    * ``sens:<target>``: the highest threshold whose sensitivity is at least the target,
      hence the best specificity that reaches it.
    * a number: returned as it is; the data are only checked.

    Parameters
    ----------
    labels : array_like of {0, 1} or bool
        1 for a positive case.
    scores : array_like of float
        Higher means more likely positive.
    rule : str or ThresholdRule
        See :func:`parse_threshold_rule`.

    Returns
    -------
    float
        The threshold, one of ``scores`` unless the rule is a fixed number.

    Raises
    ------
    ThresholdRuleError
        A rule that cannot be parsed.
    UndefinedMetricError
        ``youden`` with one class absent, or ``sens`` without a positive case.

    Examples
    --------
    >>> labels = [0, 0, 0, 1, 0, 1, 1, 1]
    >>> scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    >>> choose_threshold(labels, scores, "youden")
    0.6
    >>> choose_threshold(labels, scores, "sens:1.0")
    0.4
    >>> choose_threshold(labels, scores, "0.5")
    0.5
    """
    parsed = parse_threshold_rule(rule)
    positive = binary_labels(labels)
    values = float_scores(scores, positive.size)
    if parsed.kind is ThresholdKind.FIXED:
        return parsed.value
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    # descending distinct scores; tp[i] / fp[i]: cases with score >= candidates[i]
    order = np.argsort(-values, kind="stable")
    sorted_values = values[order]
    sorted_positive = positive[order]
    last_of_tie = np.r_[sorted_values[1:] != sorted_values[:-1], True]
    candidates = sorted_values[last_of_tie]
    tp = np.cumsum(sorted_positive)[last_of_tie]
    fp = np.cumsum(~sorted_positive)[last_of_tie]
    if parsed.kind is ThresholdKind.YOUDEN:
        require_both_classes(positive, "Youden's J")
        j_scaled = tp * n_negative - fp * n_positive
        # argmax gives the first maximum, that is the highest threshold among ties
        return float(candidates[int(np.argmax(j_scaled))])
    if n_positive == 0:
        message = f"rule {str(parsed)!r} needs positive cases; these labels have none."
        raise UndefinedMetricError(message)
    reached = tp / n_positive >= parsed.value
    return float(candidates[int(np.argmax(reached))])
