"""Calibration: Brier score, ECE and reliability bins against hand values and sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from usdcm.metrics import MetricsError, brier_score, expected_calibration_error, reliability


def test_brier_score_by_hand_and_against_sklearn() -> None:
    # (0.25)^2 + (0.5)^2 + 0 + 0 over 4
    assert brier_score([0, 1, 1, 0], [0.25, 0.5, 1.0, 0.0]) == 0.078125
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    probabilities = rng.random(200)
    assert brier_score(labels, probabilities) == pytest.approx(
        brier_score_loss(labels, probabilities)
    )


def test_reliability_bins_by_hand() -> None:
    labels = [0, 0, 1, 0, 1, 1, 1]
    probabilities = [0.0, 0.05, 0.15, 0.5, 0.55, 0.99, 1.0]
    diagram = reliability(labels, probabilities, bins=4)
    assert diagram.bin_edges == [0.0, 0.25, 0.5, 0.75, 1.0]
    # [0, .25): 0, .05, .15; [.25, .5): none; [.5, .75): .5 (left edge), .55; [.75, 1]: .99, 1
    assert diagram.count == [3, 0, 2, 2]
    assert diagram.mean_predicted[0] == pytest.approx(0.2 / 3)
    assert diagram.mean_predicted[2:] == pytest.approx([0.525, 0.995])
    assert diagram.observed[0] == pytest.approx(1 / 3)
    assert diagram.observed[2:] == [0.5, 1.0]
    assert math.isnan(diagram.mean_predicted[1]) and math.isnan(diagram.observed[1])


def test_reliability_agrees_with_sklearn_calibration_curve_on_filled_bins() -> None:
    rng = np.random.default_rng(1)
    probabilities = rng.random(500)
    labels = rng.random(500) < probabilities**2
    diagram = reliability(labels, probabilities)
    observed, predicted = calibration_curve(labels, probabilities, n_bins=10)
    filled = [index for index, count in enumerate(diagram.count) if count]
    assert np.allclose(np.asarray(diagram.observed)[filled], observed)
    assert np.allclose(np.asarray(diagram.mean_predicted)[filled], predicted)
    assert sum(diagram.count) == 500


def test_ece_by_hand() -> None:
    # bins of 0.5: [0.1, 0.2] -> predicted 0.15, observed 0.5; [0.7, 1.0] -> 0.85, 0.5
    labels = [0, 1, 1, 0]
    probabilities = [0.1, 0.2, 0.7, 1.0]
    assert expected_calibration_error(labels, probabilities, bins=2) == pytest.approx(
        0.5 * 0.35 + 0.5 * 0.35
    )


def test_ece_weights_each_bin_by_its_share_of_cases() -> None:
    labels = [0, 1, 0, 0, 0, 1, 1, 1, 1, 0]
    probabilities = [0.5, 0.5, 0.2, 0.2, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9]
    # bin 0.2: observed 1/4 -> gap 0.05; bin 0.5: exact; bin 0.9: observed 3/4 -> gap 0.15
    assert expected_calibration_error(labels, probabilities) == pytest.approx(
        0.4 * 0.05 + 0.2 * 0.0 + 0.4 * 0.15
    )
    assert expected_calibration_error([0, 1], [0.5, 0.5]) == 0.0


def test_ece_equals_a_loop_over_bins() -> None:
    rng = np.random.default_rng(2)
    probabilities = rng.random(300)
    labels = rng.random(300) < probabilities
    total = 0.0
    for low in np.linspace(0, 0.9, 10):
        inside = (probabilities >= low) & (probabilities < low + 0.1)
        if inside.any():
            gap = abs(labels[inside].mean() - probabilities[inside].mean())
            total += inside.sum() / 300 * gap
    assert expected_calibration_error(labels, probabilities) == pytest.approx(total)


@pytest.mark.parametrize(
    ("labels", "probabilities", "bins", "fragment"),
    [
        ([0, 1], [0.1, 1.2], 10, r"expected values in \[0, 1\]"),
        ([0, 1], [0.1, 0.2], 0, "bins is 0"),
        ([0, 1], [0.1, 0.2], 2.5, "bins is 2.5"),
        ([], [], 10, "at least one case"),
    ],
)
def test_bad_inputs_are_rejected(
    labels: list[int], probabilities: list[float], bins: int, fragment: str
) -> None:
    with pytest.raises(MetricsError, match=fragment):
        expected_calibration_error(labels, probabilities, bins)
