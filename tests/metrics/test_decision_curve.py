"""Decision curves against the net-benefit formula worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from usdcm.metrics import MetricsError
from usdcm.metrics.decision_curve import DEFAULT_THRESHOLDS, REFERENCE, decision_curve

# ten cases, four positive
LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
PROBS = [0.95, 0.7, 0.4, 0.1, 0.8, 0.5, 0.3, 0.2, 0.05, 0.4]


def test_net_benefit_by_hand() -> None:
    curve = decision_curve(LABELS, PROBS, thresholds=[0.1, 0.25, 0.4, 0.5, 0.9])
    assert curve.n == 10
    assert curve.prevalence == 0.4
    # pt 0.1: treated p >= 0.1: positives 0.95 0.7 0.4 0.1 (TP 4), negatives 0.8 0.5 0.3
    # 0.2 0.4 (FP 5): 4/10 - 5/10 * (0.1/0.9)
    # pt 0.25: TP 3 (0.95 0.7 0.4), FP 4 (0.8 0.5 0.3 0.4): 3/10 - 4/10 * (1/3)
    # pt 0.4: TP 3, FP 3 (0.8 0.5 0.4; 0.4 >= 0.4 is treated): 3/10 - 3/10 * (2/3)
    # pt 0.5: TP 2, FP 2 (0.8 0.5): 2/10 - 2/10 * 1
    # pt 0.9: TP 1, FP 0: 1/10
    expected = [
        0.4 - 0.5 * (0.1 / 0.9),
        0.3 - 0.4 / 3,
        0.3 - 0.3 * (0.4 / 0.6),
        0.0,
        0.1,
    ]
    assert curve.model == pytest.approx(expected, abs=1e-15)
    # treat all: 0.4 - 0.6 * pt / (1 - pt)
    assert curve.treat_all == pytest.approx(
        [0.4 - 0.6 * t / (1 - t) for t in (0.1, 0.25, 0.4, 0.5, 0.9)], abs=1e-15
    )
    assert curve.treat_none == [0.0] * 5


def test_default_grid_and_limits() -> None:
    assert DEFAULT_THRESHOLDS[0] == 0.01
    assert DEFAULT_THRESHOLDS[-1] == 0.99
    assert len(DEFAULT_THRESHOLDS) == 99
    assert DEFAULT_THRESHOLDS[49] == 0.5
    curve = decision_curve(LABELS, PROBS)
    assert curve.thresholds == list(DEFAULT_THRESHOLDS)
    # below every probability the model treats everyone: net benefit = treat all
    assert curve.model[0] == pytest.approx(curve.treat_all[0])
    # a perfect model's net benefit is the prevalence at every threshold
    perfect = decision_curve([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0])
    assert perfect.model == pytest.approx([0.5] * 99)
    assert REFERENCE == "Vickers & Elkin 2006"


def test_equals_a_loop_over_cases() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 200)
    probs = rng.random(200)
    curve = decision_curve(labels, probs)
    for t, nb in zip(curve.thresholds, curve.model, strict=True):
        tp = sum(1 for y, p in zip(labels, probs, strict=True) if p >= t and y == 1)
        fp = sum(1 for y, p in zip(labels, probs, strict=True) if p >= t and y == 0)
        assert nb == pytest.approx(tp / 200 - fp / 200 * t / (1 - t), abs=1e-12)


@pytest.mark.parametrize("thresholds", [[0.0], [1.0], [0.5, 1.2]])
def test_thresholds_must_lie_inside_zero_one(thresholds: list[float]) -> None:
    with pytest.raises(MetricsError, match=r"in \(0, 1\)"):
        decision_curve(LABELS, PROBS, thresholds=thresholds)


def test_no_case_and_bad_probabilities_are_refused() -> None:
    with pytest.raises(MetricsError, match="at least one case"):
        decision_curve([], [])
    with pytest.raises(MetricsError, match=r"\[0, 1\]"):
        decision_curve([0, 1], [0.5, 1.5])
