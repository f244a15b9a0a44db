"""Model updating by recalibration: logistic (Platt) and isotonic, fitted on held-out rows.

Owns fitting a recalibration map on one set of labelled probabilities (the validation or
out-of-fold cases) and scoring the recalibrated probabilities of another set (the evaluated
cases) with the Brier score and the ECE of :mod:`usdcm.metrics.calibration`. The evaluated
cases never take part in a fit. Never replaces the uncalibrated figures of a report: the
recalibrated ones are reported beside them.

* Logistic recalibration (Platt scaling on the logit of the probability; Cox 1958's
  calibration intercept and slope): ``p' = sigmoid(a + b * logit(p))``, fitted by Newton's
  method on the log-likelihood with a ridge of ``1e-6 * b**2 / 2``, the penalty of
  scikit-learn's ``LogisticRegression(C=1e6)``, so that a fit on separable cases stays finite.
  Probabilities are clipped to ``[1e-6, 1 - 1e-6]`` before the logit.
* Isotonic recalibration: :class:`sklearn.isotonic.IsotonicRegression`, increasing, bounded
  to [0, 1], and constant beyond the fitted range (``out_of_bounds="clip"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression

from usdcm.errors import MetricsError
from usdcm.metrics._arrays import binary_labels, float_scores, require_both_classes
from usdcm.metrics.calibration import DEFAULT_BINS, brier_score, expected_calibration_error

EPSILON = 1e-6
"""Probabilities are clipped to ``[EPSILON, 1 - EPSILON]`` before their logit."""

RIDGE = 1e-6
"""Ridge penalty on the logistic slope (scikit-learn's ``C = 1 / RIDGE``)."""

NOTE = "fitted on validation rows only; reported beside, never replacing, the figures above"
"""The ``note`` of the report's ``recalibration`` block."""

_MAX_ITERATIONS = 100
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class LogisticRecalibration:
    """The map ``p' = sigmoid(intercept + slope * logit(p))``.

    Attributes
    ----------
    intercept : float
        Calibration intercept ``a``.
    slope : float
        Calibration slope ``b``; 1 with intercept 0 leaves the probabilities unchanged.
    """

    intercept: float
    slope: float

    def apply(self, probabilities: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The recalibrated probabilities.

        >>> LogisticRecalibration(0.0, 1.0).apply([0.25, 0.5]).round(12).tolist()
        [0.25, 0.5]
        """
        values = np.asarray(probabilities, dtype=np.float64)
        return _sigmoid(self.intercept + self.slope * _logit(values))


def fit_logistic(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> LogisticRecalibration:
    """Fit logistic recalibration on labelled probabilities.

    Parameters
    ----------
    labels : array_like of {0, 1} or bool
        1 for a positive case; both classes are needed.
    probabilities : array_like of float
        Predicted probabilities of the positive class, in [0, 1].

    Returns
    -------
    LogisticRecalibration

    Raises
    ------
    UndefinedMetricError
        One class absent.
    MetricsError
        Bad labels or probabilities.

    Examples
    --------
    >>> fit = fit_logistic([0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    >>> round(fit.intercept, 4), round(fit.slope, 4)
    (0.3256, 1.1866)
    """
    positive = binary_labels(labels)
    values = float_scores(probabilities, positive.size, probabilities=True)
    require_both_classes(positive, "logistic recalibration")
    x = _logit(values)
    y = positive.astype(np.float64)
    design = np.column_stack([np.ones_like(x), x])
    penalty = np.array([0.0, RIDGE])

    def objective(weights: npt.NDArray[np.float64]) -> float:
        z = design @ weights
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * RIDGE * weights[1] ** 2)

    weights = np.array([0.0, 1.0])
    current = objective(weights)
    for _ in range(_MAX_ITERATIONS):
        fitted = _sigmoid(design @ weights)
        gradient = design.T @ (fitted - y) + penalty * weights
        hessian = design.T @ (design * (fitted * (1 - fitted))[:, None]) + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        decrement = float(gradient @ step)
        if decrement / 2 <= _TOLERANCE:
            break
        size = 1.0
        while size > 1e-10:
            candidate = weights - size * step
            value = objective(candidate)
            if value <= current - 1e-4 * size * decrement:
                break
            size /= 2
        else:
            break
        weights, current = candidate, value
    return LogisticRecalibration(intercept=float(weights[0]), slope=float(weights[1]))


def fit_isotonic(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> IsotonicRegression:
    """Fit isotonic recalibration on labelled probabilities.

    Parameters
    ----------
    labels : array_like of {0, 1} or bool
        1 for a positive case; both classes are needed.
    probabilities : array_like of float
        Predicted probabilities of the positive class, in [0, 1].

    Returns
    -------
    sklearn.isotonic.IsotonicRegression
        Fitted, increasing, bounded to [0, 1], clipped beyond the fitted range; its
        ``predict`` recalibrates.

    Raises
    ------
    UndefinedMetricError
        One class absent.

    Examples
    --------
    >>> fit = fit_isotonic([0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    >>> fit.predict([0.0, 0.35, 0.75, 1.0]).round(4).tolist()
    [0.0, 0.5, 1.0, 1.0]
    """
    positive = binary_labels(labels)
    values = float_scores(probabilities, positive.size, probabilities=True)
    require_both_classes(positive, "isotonic recalibration")
    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(values, positive.astype(np.float64))
    return model


def recalibration_summary(
    fit_labels: npt.ArrayLike,
    fit_probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    *,
    fitted_on: str,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The ``recalibration`` block of a report: fitted on one set of cases, scored on another.

    Parameters
    ----------
    fit_labels, fit_probabilities : array_like
        The cases the maps are fitted on (validation or out-of-fold), at the report's level.
    labels, probabilities : array_like
        The evaluated cases, at the report's level; never used in a fit.
    fitted_on : str
        Where the fit cases come from, such as ``"val"``.
    bins : int, default 10
        Bins of the ECE.

    Returns
    -------
    dict
        ``fitted_on``, ``n_fit``, ``uncalibrated`` {``brier``, ``ece``}, ``logistic``
        {``brier``, ``ece``, ``intercept``, ``slope``}, ``isotonic`` {``brier``, ``ece``} and
        ``note``. When the fit cases hold one class, no map is fitted: the ``logistic`` and
        ``isotonic`` values are None and the note says why.

    Raises
    ------
    MetricsError
        No fit case or no evaluated case, or bad labels or probabilities.

    Examples
    --------
    >>> block = recalibration_summary(
    ...     [0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.8], [0, 1], [0.2, 0.9],
    ...     fitted_on="val",
    ... )
    >>> block["n_fit"], block["uncalibrated"]["brier"], block["isotonic"]["brier"]
    (6, 0.025, 0.0)
    """
    fit_positive = binary_labels(fit_labels)
    fit_values = float_scores(fit_probabilities, fit_positive.size, probabilities=True)
    positive = binary_labels(labels)
    values = float_scores(probabilities, positive.size, probabilities=True)
    if fit_positive.size == 0 or positive.size == 0:
        message = (
            f"recalibration got {fit_positive.size} fit cases and {positive.size} evaluated "
            "cases; it needs at least one of each."
        )
        raise MetricsError(message)
    block: dict[str, Any] = {
        "fitted_on": fitted_on,
        "n_fit": int(fit_positive.size),
        "uncalibrated": _scores(positive, values, bins),
        "logistic": {"brier": None, "ece": None, "intercept": None, "slope": None},
        "isotonic": {"brier": None, "ece": None},
        "note": NOTE,
    }
    n_fit_positive = int(fit_positive.sum())
    if n_fit_positive in (0, fit_positive.size):
        block["note"] = (
            f"{NOTE}; not fitted: the {fitted_on} cases hold {n_fit_positive} positive and "
            f"{fit_positive.size - n_fit_positive} negative cases, and a fit needs both"
        )
        return block
    logistic = fit_logistic(fit_positive, fit_values)
    block["logistic"] = {
        **_scores(positive, logistic.apply(values), bins),
        "intercept": logistic.intercept,
        "slope": logistic.slope,
    }
    isotonic = fit_isotonic(fit_positive, fit_values)
    recalibrated = np.clip(np.asarray(isotonic.predict(values), dtype=np.float64), 0.0, 1.0)
    block["isotonic"] = _scores(positive, recalibrated, bins)
    return block


def _scores(
    positive: npt.NDArray[np.bool_], values: npt.NDArray[np.float64], bins: int
) -> dict[str, float]:
    return {
        "brier": brier_score(positive, values),
        "ece": expected_calibration_error(positive, values, bins),
    }


def _logit(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    clipped = np.clip(values, EPSILON, 1 - EPSILON)
    return np.asarray(np.log(clipped) - np.log1p(-clipped), dtype=np.float64)


def _sigmoid(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(0.5 * (1 + np.tanh(0.5 * values)), dtype=np.float64)
