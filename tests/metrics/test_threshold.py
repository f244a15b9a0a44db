"""Threshold rules: parsing, Youden's J and target sensitivity against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from usdcm.metrics import (
    ThresholdKind,
    ThresholdRule,
    ThresholdRuleError,
    UndefinedMetricError,
    choose_threshold,
    parse_threshold_rule,
)
from usdcm.metrics.threshold import THRESHOLD_CONVENTION


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("youden", ThresholdKind.YOUDEN, None),
        (" Youden ", ThresholdKind.YOUDEN, None),
        ("sens:0.9", ThresholdKind.SENSITIVITY, 0.9),
        ("SENS:1", ThresholdKind.SENSITIVITY, 1.0),
        ("0.5", ThresholdKind.FIXED, 0.5),
        ("0", ThresholdKind.FIXED, 0.0),
        ("1.0", ThresholdKind.FIXED, 1.0),
    ],
)
def test_parse_accepts_the_documented_rules(
    text: str, kind: ThresholdKind, value: float | None
) -> None:
    rule = parse_threshold_rule(text)
    assert rule.kind is kind
    if value is not None:
        assert rule.value == value
    assert parse_threshold_rule(rule) is rule
    assert parse_threshold_rule(str(rule)) == rule


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "not understood"),
        ("best", "not understood"),
        ("sens:", "not understood"),
        ("spec:0.9", "not understood"),
        ("sens:0", "expected a target in"),
        ("sens:1.5", "expected a target in"),
        ("1.5", "outside"),
        ("-0.1", "outside"),
        ("nan", "not a finite number"),
        ("sens:inf", "not a finite number"),
    ],
)
def test_parse_rejects_bad_rules_and_names_them(text: str, fragment: str) -> None:
    with pytest.raises(ThresholdRuleError, match=fragment) as caught:
        parse_threshold_rule(text)
    assert repr(text) in str(caught.value)


def brute_force(labels: np.ndarray, scores: np.ndarray, rule: str) -> float:
    """Try every distinct score from the highest down; keep the first best one."""
    best_value, best_threshold = -np.inf, np.nan
    positives = labels.sum()
    negatives = labels.size - positives
    for threshold in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= threshold
        sensitivity = (predicted & labels).sum() / positives
        if rule == "youden":
            value = sensitivity + (~predicted & ~labels).sum() / negatives - 1
            if value > best_value + 1e-12:
                best_value, best_threshold = value, threshold
        elif sensitivity >= float(rule.removeprefix("sens:")):
            return float(threshold)
    return float(best_threshold)


def test_rules_agree_with_brute_force_on_random_tied_data() -> None:
    rng = np.random.default_rng(5)
    for _ in range(100):
        size = int(rng.integers(2, 40))
        labels = rng.random(size) < 0.5
        labels[:2] = [True, False]
        scores = np.round(rng.random(size) * 0.7 + 0.3 * labels, 1)
        for rule in ("youden", "sens:0.9", "sens:0.5", "sens:1"):
            assert choose_threshold(labels, scores, rule) == brute_force(labels, scores, rule)


def test_youden_reaches_the_best_j_of_the_sklearn_roc_curve() -> None:
    rng = np.random.default_rng(9)
    labels = rng.random(300) < 0.3
    scores = rng.random(300) + 0.4 * labels
    threshold = choose_threshold(labels, scores, "youden")
    fpr, tpr, _ = roc_curve(labels, scores)
    predicted = scores >= threshold
    j = predicted[labels].mean() - predicted[~labels].mean()
    assert j == pytest.approx(np.max(tpr - fpr))


def test_youden_ties_go_to_the_highest_threshold() -> None:
    labels = [0, 0, 0, 1, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    # J(0.6) = 3/4 + 1 - 1 and J(0.4) = 1 + 3/4 - 1: equal, the higher one wins
    assert choose_threshold(labels, scores, "youden") == 0.6


def test_sensitivity_rule_is_the_highest_threshold_that_reaches_the_target() -> None:
    labels = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    scores = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.2, 0.5, 0.3]
    # 7/10 reaches 0.7 exactly: exactness matters because 0.7 * 10 != 7 in floating point
    assert choose_threshold(labels, scores, "sens:0.7") == 0.65
    assert choose_threshold(labels, scores, "sens:0.9") == 0.55
    assert choose_threshold(labels, scores, "sens:0.91") == 0.2


def test_fixed_rule_returns_its_value() -> None:
    assert choose_threshold([0, 1], [0.2, 0.4], "0.35") == 0.35
    assert choose_threshold([0, 1], [0.2, 0.4], ThresholdRule(ThresholdKind.FIXED, 0.1)) == 0.1


def test_rules_that_need_a_class_that_is_absent_raise() -> None:
    with pytest.raises(UndefinedMetricError, match="Youden"):
        choose_threshold([1, 1], [0.2, 0.4], "youden")
    with pytest.raises(UndefinedMetricError, match="needs positive cases"):
        choose_threshold([0, 0], [0.2, 0.4], "sens:0.9")
    assert choose_threshold([1, 1], [0.2, 0.4], "sens:0.5") == 0.4


def test_convention_threshold_is_an_observed_score_and_a_tie_is_positive() -> None:
    """usdcm's convention, pinned: not pROC's midpoints; ``score >= threshold`` is positive."""
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.4]
    # pROC's coords(roc, "best") would give the midpoint 0.25; usdcm gives the score 0.3
    threshold = choose_threshold(labels, scores, "youden")
    assert threshold == 0.3
    assert threshold in scores
    # the case scored exactly at the threshold is predicted positive: sensitivity 1
    predicted = [score >= threshold for score in scores]
    assert predicted == [False, False, True, True]
    rng = np.random.default_rng(8)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        y[:2] = [0, 1]
        s = np.round(rng.random(30), 2)  # with ties
        for rule in ("youden", "sens:0.8"):
            assert choose_threshold(y, s, rule) in set(s.tolist())
    assert "observed scores" in THRESHOLD_CONVENTION
    assert "not midpoints" in THRESHOLD_CONVENTION
    assert "score >= threshold" in THRESHOLD_CONVENTION
