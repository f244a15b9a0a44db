"""Decision curve analysis: the net benefit of acting on the model's probability.

Owns the net benefit of the model, of treating every case and of treating none, over a grid
of threshold probabilities. Never plots, and never chooses the operating threshold of the
report (:mod:`usdcm.metrics.threshold` does).

Reference: A. J. Vickers and E. B. Elkin, "Decision curve analysis: a novel method for
evaluating prediction models", Medical Decision Making 26(6), 2006, 565-574. At threshold
probability ``pt`` a case is treated when its probability is at least ``pt``, and

``net benefit = TP / n - FP / n * pt / (1 - pt)``;

treating all gives ``prevalence - (1 - prevalence) * pt / (1 - pt)``, treating none 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from usdcm.errors import MetricsError
from usdcm.metrics._arrays import binary_labels, float_scores

REFERENCE = "Vickers & Elkin 2006"
"""The method's reference, as it appears in ``metrics.json``."""

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(k / 100, 2) for k in range(1, 100))
"""Threshold probabilities 0.01, 0.02, ..., 0.99."""


@dataclass(frozen=True)
class DecisionCurve:
    """Net benefit per threshold probability.

    Attributes
    ----------
    thresholds : list of float
        Threshold probabilities, each in (0, 1).
    model : list of float
        Net benefit of treating the cases whose probability is at least the threshold.
    treat_all : list of float
        Net benefit of treating every case.
    treat_none : list of float
        Net benefit of treating no case: 0 at every threshold.
    n : int
        Number of cases.
    prevalence : float
        Fraction of positive cases.
    """

    thresholds: list[float]
    model: list[float]
    treat_all: list[float]
    treat_none: list[float]
    n: int
    prevalence: float


def decision_curve(
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> DecisionCurve:
    """The net benefit of the model, of treat-all and of treat-none at each threshold.

    Parameters
    ----------
    labels : array_like of {0, 1} or bool
        1 for a positive case.
    probabilities : array_like of float
        Predicted probabilities of the positive class, in [0, 1].
    thresholds : sequence of float, default 0.01, 0.02, ..., 0.99
        Threshold probabilities, each in (0, 1).

    Returns
    -------
    DecisionCurve

    Raises
    ------
    MetricsError
        No case, probabilities outside [0, 1], or a threshold outside (0, 1).

    Examples
    --------
    >>> curve = decision_curve([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], thresholds=[0.5])
    >>> curve.model, curve.treat_all, curve.treat_none  # 1/4 - 1/4 * 1; 2/4 - 2/4 * 1
    ([0.0], [0.0], [0.0])
    >>> low = decision_curve([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], thresholds=[0.2])
    >>> low.model  # 2/4 - 1/4 * 0.2/0.8
    [0.4375]
    """
    positive = binary_labels(labels)
    values = float_scores(probabilities, positive.size, probabilities=True)
    if positive.size == 0:
        message = "a decision curve needs at least one case; got none."
        raise MetricsError(message)
    grid = np.asarray(list(thresholds), dtype=np.float64)
    if grid.ndim != 1 or not np.all((grid > 0) & (grid < 1)):
        message = (
            f"decision-curve thresholds must be probabilities in (0, 1); got {list(thresholds)!r}."
        )
        raise MetricsError(message)
    n = positive.size
    prevalence = float(positive.mean())
    odds = grid / (1 - grid)
    treated = values[None, :] >= grid[:, None]
    tp = np.sum(treated & positive[None, :], axis=1)
    fp = np.sum(treated & ~positive[None, :], axis=1)
    model = tp / n - fp / n * odds
    treat_all = prevalence - (1 - prevalence) * odds
    return DecisionCurve(
        thresholds=[float(value) for value in grid],
        model=[float(value) for value in model],
        treat_all=[float(value) for value in treat_all],
        treat_none=[0.0] * grid.size,
        n=n,
        prevalence=prevalence,
    )
