"""Buderer's sample size against hand computations, and the report's precision block."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from usdcm.metrics import MetricsError
from usdcm.metrics.sample_size import (
    buderer,
    cases_for_proportion,
    interval_width,
    precision_summary,
)

Z = 1.959963984540054
"""The 97.5% standard normal quantile."""


def test_cases_for_a_proportion_by_hand() -> None:
    # Se 0.9, CI 0.8-1.0 (d = 0.1): 1.959964**2 * 0.9 * 0.1 / 0.1**2 = 34.57 -> 35
    hand = Z**2 * 0.09 / 0.01
    assert hand == pytest.approx(34.5731, abs=1e-4)
    assert cases_for_proportion(0.9) == 35
    # Sp 0.8, d 0.1: 3.8415 * 0.16 / 0.01 = 61.46 -> 62
    assert cases_for_proportion(0.8) == 62
    # p 0.5, d 0.05: 3.8415 * 0.25 / 0.0025 = 384.15 -> 385, the textbook 385
    assert cases_for_proportion(0.5, target_width=0.10) == 385
    # 90% confidence: z = 1.644854, 2.7055 * 0.09 / 0.01 = 24.35 -> 25
    assert cases_for_proportion(0.9, confidence=0.90) == 25


def test_buderer_total_by_hand() -> None:
    size = buderer(0.9, 0.8, 0.25)
    n_pos, n_neg = Z**2 * 0.9 * 0.1 / 0.01, Z**2 * 0.8 * 0.2 / 0.01
    assert (size.needed_positive, size.needed_negative) == (35, 62)
    # the positives decide: 34.57 / 0.25 = 138.3 > 61.46 / 0.75 = 81.9
    assert size.needed_total == math.ceil(max(n_pos / 0.25, n_neg / 0.75)) == 139
    # at a high prevalence the negatives decide: 61.46 / 0.2 = 307.3
    assert buderer(0.9, 0.8, 0.8).needed_total == 308
    assert buderer(0.9, 0.8, 0.0).needed_total is None
    assert buderer(0.9, 0.8, 1.0).needed_total is None


def test_a_value_on_the_integer_is_not_rounded_past_it() -> None:
    # z**2 * p(1-p) / d**2 with z**2 p(1-p) = 0.5 exactly is 50; floating point
    # may land a hair above it
    p = (1 - math.sqrt(1 - 2 / Z**2)) / 2
    assert cases_for_proportion(p) == 50


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: cases_for_proportion(1.2), "proportion"),
        (lambda: cases_for_proportion(0.9, target_width=0), "target_width"),
        (lambda: cases_for_proportion(0.9, confidence=1.0), "confidence"),
        (lambda: buderer(0.9, 0.8, 1.5), "prevalence"),
        (lambda: buderer(0.9, -0.1, 0.5), "expected_specificity"),
    ],
)
def test_bad_inputs_are_named(call: Callable[[], object], match: str) -> None:
    with pytest.raises(MetricsError, match=match):
        call()


def test_interval_width() -> None:
    assert interval_width([0.25, 0.75]) == 0.5
    assert interval_width([None, 0.75]) is None
    assert interval_width([math.nan, 0.75]) is None
    assert interval_width(None) is None


def test_precision_summary_below_target() -> None:
    block = precision_summary(
        0.9,
        0.8,
        20,
        60,
        {"sensitivity": [0.7, 0.97], "specificity": [0.69, 0.88], "auc": [None, None]},
    )
    assert block["method"] == "Buderer 1996"
    assert (block["confidence"], block["target_width"]) == (0.95, 0.20)
    assert (block["expected_sensitivity"], block["expected_specificity"]) == (0.9, 0.8)
    assert (block["needed_positive"], block["needed_negative"]) == (35, 62)
    # prevalence 20/80 = 0.25: as above
    assert block["needed_total"] == 139
    assert (block["n_positive"], block["n_negative"]) == (20, 60)
    assert block["achieved_width"]["sensitivity"] == pytest.approx(0.27)
    assert block["achieved_width"]["specificity"] == pytest.approx(0.19)
    assert block["achieved_width"]["auc"] is None
    assert block["below_target"] is True
    assert "35 positive and 62 negative" in block["explanation"]
    assert "20 positive and 60 negative" in block["explanation"]


def test_precision_summary_clips_the_expected_values_and_meets_the_target() -> None:
    block = precision_summary(1.0, 0.3, 100, 300, {})
    # 1.0 -> 0.99 (1.0 would ask for no case), 0.3 -> 0.5 (worse than chance)
    assert (block["expected_sensitivity"], block["expected_specificity"]) == (0.99, 0.5)
    assert block["needed_positive"] == math.ceil(Z**2 * 0.99 * 0.01 / 0.01) == 4
    assert block["needed_negative"] == 97
    assert block["below_target"] is False
    assert block["achieved_width"] == {}


def test_precision_summary_with_an_undefined_estimate_assumes_one_half() -> None:
    block = precision_summary(None, 0.9, 0, 50, {})
    assert block["expected_sensitivity"] == 0.5
    assert block["needed_positive"] == 97
    assert block["needed_total"] is None  # prevalence 0
    assert block["below_target"] is True
    with pytest.raises(MetricsError, match="at least one case"):
        precision_summary(0.9, 0.9, 0, 0, {})
