"""Wilson interval: R reference values, scipy's independent implementation, edge cases."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from usdcm.metrics import MetricsError, wilson


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        # R: binom::binom.confint(k, n, method = "wilson"), printed with 15 digits
        (18, 20, (0.698966354771513, 0.972133518786232)),
        # R: binom::binom.confint(5, 10, method = "wilson"), printed with 7 digits
        (5, 10, (0.2365931, 0.7634069)),
        (0, 10, (0.0, 0.2775328)),
    ],
)
def test_wilson_matches_r(k: int, n: int, expected: tuple[float, float]) -> None:
    digits = 15 if k == 18 else 7
    assert [round(bound, digits) for bound in wilson(k, n)] == list(expected)


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy_on_a_grid(confidence: float) -> None:
    for n in (1, 2, 7, 30, 113):
        for k in range(n + 1):
            ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
            low, high = wilson(k, n, confidence)
            assert low == pytest.approx(ci.low, abs=1e-12)
            assert high == pytest.approx(ci.high, abs=1e-12)


def test_bounds_solve_the_score_equation() -> None:
    # Wilson's bounds are the p at which the score statistic |p_hat - p| / se(p) equals z
    k, n, z = 7, 40, 1.959963984540054
    for bound in wilson(k, n):
        assert abs(k / n - bound) / math.sqrt(bound * (1 - bound) / n) == pytest.approx(z)


def test_extreme_counts_give_exact_zero_and_one() -> None:
    assert wilson(0, 12)[0] == 0.0
    assert wilson(12, 12)[1] == 1.0
    low, high = wilson(3, 12)
    assert (1 - high, 1 - low) == pytest.approx(wilson(9, 12))


def test_no_trials_gives_nan() -> None:
    low, high = wilson(0, 0)
    assert math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize(
    ("k", "n", "confidence", "fragment"),
    [
        (5, 4, 0.95, "k=5, n=4"),
        (-1, 4, 0.95, "k=-1"),
        (1, -4, 0.95, "n=-4"),
        (1, 4, 1.0, "confidence is 1.0"),
        (1, 4, 0.0, "confidence is 0.0"),
    ],
)
def test_bad_arguments_are_rejected(k: int, n: int, confidence: float, fragment: str) -> None:
    with pytest.raises(MetricsError, match=fragment):
        wilson(k, n, confidence)
