"""Confidence intervals for proportions: the Wilson score interval.

Owns the interval of a count ``k`` out of ``n``; knows nothing of labels, thresholds or
which proportion (sensitivity, PPV, ...) the count stands for.
"""

from __future__ import annotations

import math

from scipy.stats import norm

from usdcm.errors import MetricsError


def z_value(confidence: float) -> float:
    """The two-sided standard normal quantile of ``confidence``.

    >>> round(z_value(0.95), 6)
    1.959964
    """
    if not 0 < confidence < 1:
        message = f"confidence is {confidence!r}; expected a level in (0, 1), such as 0.95."
        raise MetricsError(message)
    return float(norm.ppf(1 - (1 - confidence) / 2))


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n``, without continuity correction.

    Computed with the formula and order of operations of R's
    ``binom::binom.confint(k, n, method="wilson")``; the bounds agree with R's printed
    15 digits. They are clipped to [0, 1] against rounding.

    Parameters
    ----------
    k : int
        Number of successes, ``0 <= k <= n``.
    n : int
        Number of trials, ``n >= 0``.
    confidence : float, default 0.95
        Two-sided confidence level.

    Returns
    -------
    tuple of float
        ``(lower, upper)``; ``(nan, nan)`` when ``n == 0``.

    Raises
    ------
    MetricsError
        ``k`` or ``n`` negative, ``k > n``, or ``confidence`` outside (0, 1).

    Examples
    --------
    >>> [round(bound, 15) for bound in wilson(18, 20)]  # R: 0.698966354771513 0.972133518786232
    [0.698966354771513, 0.972133518786232]
    >>> wilson(0, 10)[0], wilson(10, 10)[1]
    (0.0, 1.0)
    >>> wilson(0, 0)
    (nan, nan)
    """
    z = z_value(confidence)
    if n < 0 or k < 0 or k > n:
        message = f"wilson got k={k!r}, n={n!r}; expected counts with 0 <= k <= n."
        raise MetricsError(message)
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = p + 0.5 * z2 / n
    half = z * math.sqrt((p * (1 - p) + 0.25 * z2 / n) / n)
    lower = 0.0 if k == 0 else max(0.0, (centre - half) / denominator)
    upper = 1.0 if k == n else min(1.0, (centre + half) / denominator)
    return (lower, upper)
