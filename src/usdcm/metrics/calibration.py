"""Calibration of predicted probabilities: Brier score, ECE and reliability-diagram data.

Owns how probabilities are binned and compared with observed frequencies. Never plots and
never decides the threshold.

Bins are ``bins`` equal-width intervals of [0, 1]: ``[e_i, e_{i+1})``, the last one closed
``[e_{bins-1}, 1]``, with edges ``numpy.linspace(0, 1, bins + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from usdcm.errors import MetricsError
from usdcm.metrics._arrays import binary_labels, float_scores

DEFAULT_BINS = 10
"""Number of equal-width bins of the ECE and the reliability diagram."""


@dataclass(frozen=True)
class Reliability:
    """Data of a reliability diagram, one entry per bin.

    Attributes
    ----------
    bin_edges : list of float
        ``bins + 1`` edges from 0 to 1.
    mean_predicted : list of float
        Mean predicted probability of the cases in each bin; NaN for an empty bin.
    observed : list of float
        Fraction of positive cases in each bin; NaN for an empty bin.
    count : list of int
        Number of cases in each bin.
    """

    bin_edges: list[float]
    mean_predicted: list[float]
    observed: list[float]
    count: list[int]


def brier_score(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Mean squared difference between the predicted probability and the 0/1 outcome.

    Parameters
    ----------
    labels : array_like of {0, 1} or bool
        1 for a positive case.
    probabilities : array_like of float
        Predicted probabilities of the positive class, in [0, 1].

    Returns
    -------
    float
        0 is perfect; always predicting 0.5 scores 0.25.

    Examples
    --------
    >>> brier_score([0, 1, 1, 0], [0.25, 0.5, 1.0, 0.0])
    0.078125
    """
    positive, values = _inputs(labels, probabilities)
    return float(np.mean((values - positive) ** 2))


def reliability(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, bins: int = DEFAULT_BINS
) -> Reliability:
    """Per-bin mean predicted probability, observed frequency and count.

    Parameters
    ----------
    labels : array_like of {0, 1} or bool
        1 for a positive case.
    probabilities : array_like of float
        Predicted probabilities of the positive class, in [0, 1].
    bins : int, default 10
        Number of equal-width bins.

    Returns
    -------
    Reliability

    Examples
    --------
    >>> diagram = reliability([0, 0, 1, 1], [0.1, 0.2, 0.7, 1.0], bins=2)
    >>> diagram.bin_edges, diagram.count
    ([0.0, 0.5, 1.0], [2, 2])
    >>> diagram.mean_predicted, diagram.observed
    ([0.15000000000000002, 0.85], [0.0, 1.0])
    """
    positive, values = _inputs(labels, probabilities)
    edges = _edges(bins)
    index = _bin_index(values, edges)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(index, weights=values, minlength=bins) / count
        observed = np.bincount(index, weights=positive.astype(np.float64), minlength=bins) / count
    return Reliability(
        bin_edges=[float(edge) for edge in edges],
        mean_predicted=[float(value) for value in mean_predicted],
        observed=[float(value) for value in observed],
        count=[int(value) for value in count],
    )


def expected_calibration_error(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, bins: int = DEFAULT_BINS
) -> float:
    """Expected calibration error: the count-weighted mean of ``|observed - mean predicted|``.

    Uses the bins of :func:`reliability`; empty bins weigh nothing.

    Parameters
    ----------
    labels : array_like of {0, 1} or bool
        1 for a positive case.
    probabilities : array_like of float
        Predicted probabilities of the positive class, in [0, 1].
    bins : int, default 10
        Number of equal-width bins.

    Returns
    -------
    float
        0 when every bin's observed frequency equals its mean prediction.

    Examples
    --------
    >>> round(expected_calibration_error([0, 0, 1, 1], [0.1, 0.2, 0.7, 1.0], bins=2), 6)
    0.15
    """
    diagram = reliability(labels, probabilities, bins)
    count = np.asarray(diagram.count, dtype=np.float64)
    filled = count > 0
    gap = np.abs(np.asarray(diagram.observed) - np.asarray(diagram.mean_predicted))
    return float(np.sum(gap[filled] * count[filled]) / count.sum())


def _inputs(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    positive = binary_labels(labels)
    values = float_scores(probabilities, positive.size, probabilities=True)
    if positive.size == 0:
        message = "calibration needs at least one case; got none."
        raise MetricsError(message)
    return positive, values


def _edges(bins: int) -> npt.NDArray[np.float64]:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        message = f"bins is {bins!r}; expected a whole number of bins, at least 1 (10 is usual)."
        raise MetricsError(message)
    return np.linspace(0.0, 1.0, int(bins) + 1)


def _bin_index(
    values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]
) -> npt.NDArray[np.intp]:
    index = np.searchsorted(edges, values, side="right") - 1
    return np.clip(index, 0, edges.size - 2).astype(np.intp)
