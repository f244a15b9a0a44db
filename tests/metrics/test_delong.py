"""DeLong AUC and variance: against a slow O(n^2) implementation, sklearn and hand values."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from usdcm.metrics import MetricsError, UndefinedMetricError, delong_auc, roc_auc
from usdcm.metrics.delong import midranks

Z = 1.959963984540054


def slow_delong(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[float, float]:
    """DeLong (1988) from the Mann-Whitney kernel: psi = 1, 1/2 or 0 for every pair."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    x, z = s[y], s[~y]
    m, n = x.size, z.size
    psi = np.empty((m, n))
    for i in range(m):
        for j in range(n):
            psi[i, j] = 1.0 if x[i] > z[j] else 0.5 if x[i] == z[j] else 0.0
    auc = psi.mean()
    v10 = psi.mean(axis=1)  # placement of each positive among the negatives
    v01 = psi.mean(axis=0)  # placement of each negative among the positives
    s10 = np.sum((v10 - auc) ** 2) / (m - 1)
    s01 = np.sum((v01 - auc) ** 2) / (n - 1)
    return float(auc), float(s10 / m + s01 / n)


HAND_CASES = [
    # no ties
    ([0, 0, 1, 1, 0, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.9]),
    # ties within and across classes
    ([0, 0, 0, 1, 1, 1], [0.1, 0.3, 0.6, 0.4, 0.6, 0.9]),
    ([1, 0, 1, 0, 1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5, 0.7, 0.2, 0.2, 0.2]),
    # every score equal
    ([0, 1, 0, 1, 1], [0.3, 0.3, 0.3, 0.3, 0.3]),
    # perfect and inverted separation
    ([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9]),
    ([1, 1, 0, 0, 0], [0.1, 0.2, 0.3, 0.8, 0.9]),
]


@pytest.mark.parametrize(("labels", "scores"), HAND_CASES)
def test_fast_delong_equals_slow_delong_on_hand_cases(
    labels: list[int], scores: list[float]
) -> None:
    result = delong_auc(labels, scores)
    auc, variance = slow_delong(labels, scores)
    assert result.auc == pytest.approx(auc, abs=1e-12)
    assert result.variance == pytest.approx(variance, abs=1e-12)
    assert result.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert roc_auc(labels, scores) == pytest.approx(auc, abs=1e-12)


def test_fast_delong_equals_slow_delong_on_random_tied_data() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        size = int(rng.integers(4, 60))
        labels = rng.random(size) < 0.4
        labels[:2] = [True, False]
        scores = np.round(rng.random(size) + 0.3 * labels, 1)  # coarse: many ties
        result = delong_auc(labels, scores)
        auc, variance = slow_delong(labels, scores)
        assert result.auc == pytest.approx(auc, abs=1e-12)
        assert result.variance == pytest.approx(variance, abs=1e-12)
        assert result.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_hand_computed_values_and_interval() -> None:
    # positives 0.4, 0.6, 0.9 against negatives 0.1, 0.3, 0.6: 7.5 of 9 pairs
    result = delong_auc([0, 0, 0, 1, 1, 1], [0.1, 0.3, 0.6, 0.4, 0.6, 0.9])
    assert result.auc == pytest.approx(7.5 / 9)
    # V10 = (2/3, 5/6, 1): var 1/36; V01 = (1, 1, 1/2): var 1/12; 1/36/3 + 1/12/3 = 1/27
    assert result.variance == pytest.approx(1 / 27)
    assert result.ci95[0] == pytest.approx(7.5 / 9 - Z * math.sqrt(1 / 27))
    assert result.ci95[1] == 1.0  # clipped, as pROC does
    assert (result.n_positive, result.n_negative) == (3, 3)


def test_interval_is_the_normal_interval_when_inside_zero_one() -> None:
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(40, dtype=bool), np.zeros(60, dtype=bool)]
    scores = rng.normal(size=100) + 0.5 * labels
    result = delong_auc(labels, scores)
    half = Z * math.sqrt(result.variance)
    assert result.ci95 == pytest.approx((result.auc - half, result.auc + half))
    narrower = delong_auc(labels, scores, confidence=0.9)
    assert narrower.ci95[0] > result.ci95[0] and narrower.ci95[1] < result.ci95[1]


def test_perfect_separation_has_zero_variance() -> None:
    result = delong_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (result.auc, result.variance, result.ci95) == (1.0, 0.0, (1.0, 1.0))


def test_a_single_case_of_a_class_gives_nan_variance() -> None:
    result = delong_auc([0, 0, 1], [0.1, 0.5, 0.3])
    assert result.auc == 0.5
    assert math.isnan(result.variance)
    assert all(math.isnan(bound) for bound in result.ci95)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0], [False, False, False]])
def test_one_class_is_an_error(labels: list[int]) -> None:
    with pytest.raises(UndefinedMetricError, match="needs at least one of each"):
        delong_auc(labels, [0.1, 0.2, 0.3])
    with pytest.raises(UndefinedMetricError):
        roc_auc(labels, [0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("labels", "scores", "fragment"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "expected only 0"),
        ([0, 1], [0.1, 0.2, 0.3], r"expected \(2,\)"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_bad_inputs_are_rejected(labels: object, scores: object, fragment: str) -> None:
    with pytest.raises(MetricsError, match=fragment):
        delong_auc(labels, scores)  # type: ignore[arg-type]


def test_midranks_equal_scipy_average_ranks() -> None:
    rng = np.random.default_rng(11)
    for size in (0, 1, 2, 17, 200):
        values = np.round(rng.random(size), 1)
        assert np.array_equal(midranks(values), rankdata(values))


ASAH_NDKA = Path(__file__).parent / "data" / "asah_ndka.csv"
"""pROC's aSAH data, outcome and ndka (see data/README.md)."""


def test_delong_matches_proc_on_asah_ndka() -> None:
    """pROC: ``ci.auc(roc(aSAH$outcome, aSAH$ndka), method = "delong")``, Poor is the case."""
    with ASAH_NDKA.open(newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    assert len(rows) == 113
    labels = [row["outcome"] == "Poor" for row in rows]
    assert sum(labels) == 41
    result = delong_auc(labels, [float(row["ndka"]) for row in rows])
    assert result.auc == pytest.approx(0.611957994579946, abs=1e-9)
    assert result.ci95[0] == pytest.approx(0.501244999271703, abs=1e-9)
    assert result.ci95[1] == pytest.approx(0.722670989888189, abs=1e-9)
