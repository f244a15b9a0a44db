"""Recalibration: fitted on the fit cases only; logistic fit against scikit-learn."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from usdcm.metrics import MetricsError, UndefinedMetricError, expected_calibration_error
from usdcm.metrics.recalibration import (
    NOTE,
    LogisticRecalibration,
    fit_isotonic,
    fit_logistic,
    recalibration_summary,
)


def overconfident(n: int, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Labels and probabilities whose logit is twice the true log-odds, shifted by 0.5."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(np.int64)
    probabilities = 1 / (1 + np.exp(-(2 * true_logit + 0.5)))
    return labels, probabilities


def logit(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(np.log(p / (1 - p)), dtype=np.float64)


def test_logistic_fit_equals_scikit_learn() -> None:
    labels, probabilities = overconfident(400, 0)
    fit = fit_logistic(labels, probabilities)
    reference = LogisticRegression(C=1e6, tol=1e-12, max_iter=10_000)
    reference.fit(logit(probabilities)[:, None], labels)
    assert fit.intercept == pytest.approx(float(reference.intercept_[0]), abs=1e-5)
    assert fit.slope == pytest.approx(float(reference.coef_[0, 0]), abs=1e-5)
    # the data were made overconfident by a factor 2: the slope recovers about 1/2
    assert 0.35 < fit.slope < 0.65
    assert fit.apply(probabilities) == pytest.approx(
        reference.predict_proba(logit(probabilities)[:, None])[:, 1], abs=1e-6
    )


def test_identity_map_and_separable_cases() -> None:
    assert LogisticRecalibration(0.0, 1.0).apply([0.1, 0.9]) == pytest.approx([0.1, 0.9])
    fit = fit_logistic([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert np.isfinite([fit.intercept, fit.slope]).all()
    assert fit.slope > 1  # perfectly separated: sharpen
    # probabilities of exactly 0 and 1 are clipped before the logit, never infinite
    edge = fit_logistic([0, 1, 0, 1], [0.0, 1.0, 0.3, 0.6])
    assert np.isfinite([edge.intercept, edge.slope]).all()


def test_isotonic_equals_scikit_learn_and_clips() -> None:
    labels, probabilities = overconfident(300, 1)
    fit = fit_isotonic(labels, probabilities)
    reference = IsotonicRegression(out_of_bounds="clip").fit(probabilities, labels)
    grid = np.linspace(0, 1, 101)
    assert fit.predict(grid) == pytest.approx(reference.predict(grid))
    outside = fit.predict([0.0, 1.0])
    assert outside.tolist() == [
        float(reference.predict([probabilities.min()])[0]),
        float(reference.predict([probabilities.max()])[0]),
    ]


def test_one_class_is_refused_by_the_fits() -> None:
    with pytest.raises(UndefinedMetricError):
        fit_logistic([1, 1], [0.2, 0.8])
    with pytest.raises(UndefinedMetricError):
        fit_isotonic([0, 0], [0.2, 0.8])


def test_summary_scores_the_evaluated_cases_with_the_fitted_maps() -> None:
    fit_labels, fit_probs = overconfident(300, 2)
    labels, probs = overconfident(200, 3)
    block = recalibration_summary(fit_labels, fit_probs, labels, probs, fitted_on="val")
    assert block["fitted_on"] == "val"
    assert block["n_fit"] == 300
    assert block["note"] == NOTE
    assert block["uncalibrated"]["brier"] == pytest.approx(brier_score_loss(labels, probs))
    assert block["uncalibrated"]["ece"] == pytest.approx(expected_calibration_error(labels, probs))
    logistic = fit_logistic(fit_labels, fit_probs)
    assert block["logistic"]["intercept"] == logistic.intercept
    assert block["logistic"]["slope"] == logistic.slope
    assert block["logistic"]["brier"] == pytest.approx(
        brier_score_loss(labels, logistic.apply(probs))
    )
    isotonic = fit_isotonic(fit_labels, fit_probs)
    assert block["isotonic"]["brier"] == pytest.approx(
        brier_score_loss(labels, isotonic.predict(probs))
    )
    # recalibrating an overconfident model helps on new cases
    assert block["logistic"]["brier"] < block["uncalibrated"]["brier"]
    assert block["logistic"]["ece"] < block["uncalibrated"]["ece"]


def test_moving_evaluated_cases_leaves_the_fit_alone() -> None:
    """The acceptance test: only the fit cases decide the fitted parameters."""
    fit_labels, fit_probs = overconfident(300, 4)
    labels, probs = overconfident(200, 5)
    base = recalibration_summary(fit_labels, fit_probs, labels, probs, fitted_on="val")

    # change every evaluated case's score and label, and drop half of them
    rng = np.random.default_rng(6)
    moved = recalibration_summary(
        fit_labels, fit_probs, 1 - labels[:100], rng.random(100), fitted_on="val"
    )
    assert moved["logistic"]["intercept"] == base["logistic"]["intercept"]
    assert moved["logistic"]["slope"] == base["logistic"]["slope"]
    assert moved["n_fit"] == base["n_fit"]
    assert moved["uncalibrated"] != base["uncalibrated"]  # the evaluated cases did change

    # the isotonic map is the same map: the same evaluated cases score the same
    same_eval = recalibration_summary(fit_labels, fit_probs, labels, probs, fitted_on="val")
    assert same_eval == base

    # changing the fit cases changes the fit
    refit = recalibration_summary(
        fit_labels, np.clip(fit_probs * 0.8, 0, 1), labels, probs, fitted_on="val"
    )
    assert refit["logistic"]["intercept"] != base["logistic"]["intercept"]
    assert refit["isotonic"] != base["isotonic"]
    assert refit["uncalibrated"] == base["uncalibrated"]


def test_fit_cases_of_one_class_fit_nothing() -> None:
    block = recalibration_summary([1, 1, 1], [0.2, 0.5, 0.9], [0, 1], [0.3, 0.7], fitted_on="val")
    assert block["logistic"] == {"brier": None, "ece": None, "intercept": None, "slope": None}
    assert block["isotonic"] == {"brier": None, "ece": None}
    assert block["uncalibrated"]["brier"] == pytest.approx((0.09 + 0.09) / 2)
    assert "3 positive and 0 negative" in block["note"]
    assert block["note"].startswith(NOTE)


def test_no_cases_are_refused() -> None:
    with pytest.raises(MetricsError, match="at least one of each"):
        recalibration_summary([], [], [0, 1], [0.3, 0.7], fitted_on="val")
    with pytest.raises(MetricsError, match="at least one of each"):
        recalibration_summary([0, 1], [0.3, 0.7], [], [], fitted_on="val")
