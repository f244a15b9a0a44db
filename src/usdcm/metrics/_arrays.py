"""Checks shared by the metrics modules: turn labels and scores into validated numpy arrays.

Owns input validation only; computes no statistic.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from usdcm.errors import MetricsError, UndefinedMetricError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def binary_labels(labels: npt.ArrayLike) -> BoolArray:
    """Labels as a 1-D boolean array; accepts booleans or the numbers 0 and 1.

    >>> binary_labels([0, 1, 1]).tolist()
    [False, True, True]
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        message = f"labels have shape {array.shape}; expected a 1-D array of 0/1 values."
        raise MetricsError(message)
    if array.dtype == np.bool_:
        return array
    if array.size and not np.isin(array, (0, 1)).all():
        found = sorted({str(value) for value in np.unique(array)})[:5]
        message = f"labels contain {found}; expected only 0 (negative) and 1 (positive)."
        raise MetricsError(message)
    return array.astype(np.bool_)


def float_scores(scores: npt.ArrayLike, n: int, *, probabilities: bool = False) -> FloatArray:
    """Scores as a 1-D float array of length ``n``, finite, and in [0, 1] if ``probabilities``.

    >>> float_scores([0.2, 1], 2).tolist()
    [0.2, 1.0]
    """
    try:
        array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as err:
        message = f"scores could not be read as numbers ({err}); pass a 1-D array of floats."
        raise MetricsError(message) from err
    if array.shape != (n,):
        message = f"scores have shape {array.shape}; expected ({n},), one score per label."
        raise MetricsError(message)
    if not np.isfinite(array).all():
        message = "scores contain NaN or infinite values; drop or fix those cases first."
        raise MetricsError(message)
    if probabilities and array.size and (array.min() < 0 or array.max() > 1):
        message = (
            f"probabilities span [{array.min()!r}, {array.max()!r}]; expected values in [0, 1]."
        )
        raise MetricsError(message)
    return array


def require_both_classes(labels: BoolArray, what: str) -> None:
    """Raise :class:`UndefinedMetricError` unless ``labels`` hold both classes.

    >>> require_both_classes(np.array([True, True]), "AUC")
    Traceback (most recent call last):
    ...
    usdcm.errors.UndefinedMetricError: AUC is undefined with 2 positive and 0 negative cases; it needs at least one of each.
    """  # noqa: E501
    n_positive = int(labels.sum())
    n_negative = int(labels.size - n_positive)
    if n_positive == 0 or n_negative == 0:
        message = (
            f"{what} is undefined with {n_positive} positive and {n_negative} negative cases; "
            "it needs at least one of each."
        )
        raise UndefinedMetricError(message)
