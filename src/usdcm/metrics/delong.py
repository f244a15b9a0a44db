"""The area under the ROC curve and its DeLong variance, by the fast algorithm of Sun & Xu.

Owns the AUC of one score against binary labels, its variance and its normal confidence
interval. Knows nothing of thresholds, bootstraps or how cases were aggregated.

Reference: X. Sun and W. Xu, "Fast implementation of DeLong's algorithm for comparing the
areas under correlated receiver operating characteristic curves", IEEE Signal Processing
Letters 21(11), 2014. Midranks make every tie count one half, as in the Mann-Whitney
statistic, so the AUC equals :func:`sklearn.metrics.roc_auc_score`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from usdcm.metrics._arrays import binary_labels, float_scores, require_both_classes
from usdcm.metrics.intervals import z_value


@dataclass(frozen=True)
class DelongResult:
    """An AUC with its DeLong variance and confidence interval.

    Attributes
    ----------
    auc : float
        Area under the ROC curve; ties between a positive and a negative count one half.
    variance : float
        DeLong variance of ``auc``; NaN when a class has a single case (the structural
        components' sample variance needs two).
    ci95 : tuple of float
        ``auc -/+ z * sqrt(variance)`` clipped to [0, 1], as R's
        ``pROC::ci.auc(method="delong")``; ``(nan, nan)`` when ``variance`` is NaN.
    n_positive, n_negative : int
        Number of positive and negative cases.
    """

    auc: float
    variance: float
    ci95: tuple[float, float]
    n_positive: int
    n_negative: int


def midranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks of ``values``, tied values sharing the mean of their ranks.

    The ``compute_midrank`` step of Sun & Xu; equal to ``scipy.stats.rankdata`` with
    ``method="average"``, in O(n log n).

    >>> midranks(np.array([0.3, 0.1, 0.3, 0.2])).tolist()
    [3.5, 1.0, 3.5, 2.0]
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], ordered.size]
    ranks = np.empty(ordered.size, dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2)[np.cumsum(first) - 1]
    return ranks


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """The AUC alone, from midranks: the cheap statistic for a bootstrap.

    Parameters
    ----------
    labels : array_like of {0, 1} or bool
        1 for a positive case.
    scores : array_like of float
        Higher means more likely positive.

    Returns
    -------
    float
        The probability that a random positive outscores a random negative, ties counting
        one half.

    Raises
    ------
    UndefinedMetricError
        When one class is absent.

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8])
    0.875
    """
    positive = binary_labels(labels)
    values = float_scores(scores, positive.size)
    require_both_classes(positive, "AUC")
    m = int(positive.sum())
    n = positive.size - m
    ranks = midranks(values)
    return float((ranks[positive].sum() - m * (m + 1) / 2) / (m * n))


def delong_auc(
    labels: npt.ArrayLike, scores: npt.ArrayLike, *, confidence: float = 0.95
) -> DelongResult:
    """AUC, DeLong variance and normal confidence interval, in O(n log n).

    Follows Sun & Xu (2014): with ``m`` positives ``X`` and ``n`` negatives ``Y``, and
    midranks ``T_X`` (within ``X``), ``T_Y`` (within ``Y``) and ``T_Z`` (within both),
    the structural components are ``V10_i = (T_Z(X_i) - T_X(X_i)) / n`` and
    ``V01_j = 1 - (T_Z(Y_j) - T_Y(Y_j)) / m``; the AUC is the mean of ``V10``, and the
    variance is ``var(V10) / m + var(V01) / n`` with sample variances (``ddof=1``).

    Parameters
    ----------
    labels : array_like of {0, 1} or bool
        1 for a positive case.
    scores : array_like of float
        Higher means more likely positive; ties are allowed.
    confidence : float, default 0.95
        Level of the two-sided interval.

    Returns
    -------
    DelongResult

    Raises
    ------
    UndefinedMetricError
        When one class is absent.
    MetricsError
        Labels other than 0/1, scores of another length, or non-finite scores.

    Examples
    --------
    >>> result = delong_auc([0, 0, 0, 1, 1, 1], [0.1, 0.3, 0.6, 0.4, 0.6, 0.9])
    >>> round(result.auc, 6), round(result.variance, 6)
    (0.833333, 0.037037)
    >>> [round(bound, 4) for bound in result.ci95]
    [0.4561, 1.0]
    """
    z = z_value(confidence)
    positive = binary_labels(labels)
    values = float_scores(scores, positive.size)
    require_both_classes(positive, "AUC")
    x = values[positive]
    y = values[~positive]
    m, n = x.size, y.size
    t_z = midranks(np.concatenate([x, y]))
    v10 = (t_z[:m] - midranks(x)) / n
    v01 = 1.0 - (t_z[m:] - midranks(y)) / m
    auc = float(v10.mean())
    if m < 2 or n < 2:
        return DelongResult(auc, math.nan, (math.nan, math.nan), m, n)
    variance = float(v10.var(ddof=1) / m + v01.var(ddof=1) / n)
    half = z * math.sqrt(variance)
    ci95 = (max(0.0, auc - half), min(1.0, auc + half))
    return DelongResult(auc, variance, ci95, m, n)
