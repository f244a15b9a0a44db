"""Clustered, stratified bootstrap: whole clusters, fixed strata, seeding, skips, coverage."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy.stats import norm

from usdcm.metrics import MetricsError, UndefinedMetricError, cluster_bootstrap, roc_auc
from usdcm.metrics.bootstrap import cluster_strata


def simulate(
    rng: np.random.Generator, n_patients: int, delta: float = 1.0
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64], npt.NDArray[np.int_]]:
    """1-5 images per patient; score = delta * label + patient effect N(0, 1) + N(0, 0.5^2)."""
    sizes = rng.integers(1, 6, n_patients)
    patient_labels = rng.random(n_patients) < 0.4
    patient_labels[:2] = [True, False]
    effect = rng.normal(0.0, 1.0, n_patients)
    patient = np.repeat(np.arange(n_patients), sizes)
    labels = patient_labels[patient]
    scores = delta * labels + effect[patient] + rng.normal(0.0, 0.5, patient.size)
    return labels, scores, patient


# a positive and a negative image of different patients differ by N(delta, 2 * (1 + 0.25))
TRUE_AUC = float(norm.cdf(1.0 / np.sqrt(2 * 1.25)))


def coverage(simulations: int, resamples: int, *, clustered: bool) -> float:
    rng = np.random.default_rng(2024)
    hits = 0
    for simulation in range(simulations):
        labels, scores, patient = simulate(rng, 100)
        clusters = patient if clustered else np.arange(labels.size)
        result = cluster_bootstrap(
            labels, scores, clusters, roc_auc, n_resamples=resamples, seed=simulation
        )
        hits += result.ci95[0] <= TRUE_AUC <= result.ci95[1]
    return hits / simulations


def test_clustered_interval_covers_about_95_percent_and_image_level_does_not() -> None:
    clustered = coverage(300, 200, clustered=True)
    assert 0.90 <= clustered <= 0.99
    # resampling single images ignores the shared patient effect and undercovers badly
    assert coverage(300, 200, clustered=False) < clustered - 0.1


@pytest.mark.slow
def test_clustered_interval_coverage_with_many_simulations() -> None:
    # more simulations (Monte Carlo error about 0.01) and resamples; about 12 s
    assert 0.91 <= coverage(500, 400, clustered=True) <= 0.98


def test_same_seed_gives_identical_intervals_and_another_seed_does_not() -> None:
    labels, scores, patient = simulate(np.random.default_rng(1), 50)
    first = cluster_bootstrap(labels, scores, patient, roc_auc, n_resamples=300, seed=5)
    again = cluster_bootstrap(labels, scores, patient, roc_auc, n_resamples=300, seed=5)
    other = cluster_bootstrap(labels, scores, patient, roc_auc, n_resamples=300, seed=6)
    assert first == again
    assert first.ci95 != other.ci95
    assert first.estimate == roc_auc(labels, scores)
    assert (first.resamples, first.seed, first.stratified) == (300, 5, True)


def test_clusters_are_drawn_whole() -> None:
    # cluster c holds c + 1 cases; the scores carry the cluster number
    clusters = np.repeat(np.arange(6), np.arange(1, 7))
    labels = clusters % 2
    seen_sizes: list[int] = []

    def statistic(labels: Any, scores: Any) -> float:
        for cluster, count in Counter(scores.tolist()).items():
            assert count % (cluster + 1) == 0, "a cluster was split"
        seen_sizes.append(len(scores))
        return 0.0

    result = cluster_bootstrap(labels, clusters, clusters, statistic, n_resamples=200)
    assert result.skipped == 0
    assert len(set(seen_sizes)) > 3  # resamples really differ in size


def test_stratification_keeps_the_number_of_clusters_per_majority_label() -> None:
    # one case per cluster: the number of positives is fixed only when stratified
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    scores = np.zeros(10)
    clusters = np.arange(10)

    def positives(labels: Any, scores: Any) -> float:
        return float(np.sum(labels))

    stratified = cluster_bootstrap(labels, scores, clusters, positives, n_resamples=300)
    assert stratified.ci95 == (3.0, 3.0)
    plain = cluster_bootstrap(labels, scores, clusters, positives, n_resamples=300, stratify=False)
    assert plain.ci95[0] < 3.0 < plain.ci95[1]
    assert not plain.stratified


def test_undefined_resamples_are_skipped_and_counted() -> None:
    # 1 positive cluster of 4: unstratified, a resample misses it with probability (3/4)^4
    labels = np.array([1, 0, 0, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.3])
    result = cluster_bootstrap(
        labels, scores, np.arange(4), roc_auc, n_resamples=2000, stratify=False
    )
    assert abs(result.skipped - 2000 * 0.75**4) < 4 * np.sqrt(2000 * 0.316 * 0.684)
    assert result.ci95 == (1.0, 1.0)
    stratified = cluster_bootstrap(labels, scores, np.arange(4), roc_auc, n_resamples=500)
    assert stratified.skipped == 0


def test_nan_statistics_are_skipped_too() -> None:
    calls = iter(range(10_000))

    def every_other(labels: Any, scores: Any) -> float:
        return float("nan") if next(calls) % 2 else 1.0

    result = cluster_bootstrap([0, 1], [0.0, 1.0], [0, 1], every_other, n_resamples=100)
    assert result.estimate == 1.0  # call 0, on the original data
    assert result.skipped == 50


def test_all_resamples_undefined_gives_nan_interval() -> None:
    def undefined(labels: Any, scores: Any) -> float:
        message = "never defined"
        raise UndefinedMetricError(message)

    result = cluster_bootstrap([0, 1], [0.0, 1.0], [0, 1], undefined, n_resamples=10)
    assert result.skipped == 10
    assert np.isnan(result.estimate) and np.isnan(result.ci95).all()


def test_other_errors_of_the_statistic_propagate() -> None:
    def broken(labels: Any, scores: Any) -> float:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        cluster_bootstrap([0, 1], [0.0, 1.0], [0, 1], broken, n_resamples=10)


def test_percentile_interval_matches_numpy_quantiles() -> None:
    labels, scores, patient = simulate(np.random.default_rng(4), 30)
    values: list[float] = []

    def recording(labels: Any, scores: Any) -> float:
        value = roc_auc(labels, scores)
        values.append(value)
        return value

    result = cluster_bootstrap(labels, scores, patient, recording, n_resamples=400, seed=2)
    low, high = np.quantile(values[1:], [0.025, 0.975])  # values[0]: the original data
    assert result.ci95 == (low, high)
    narrow = cluster_bootstrap(
        labels, scores, patient, roc_auc, n_resamples=400, seed=2, confidence=0.5
    )
    assert narrow.ci95 == tuple(np.quantile(values[1:], [0.25, 0.75]))


def test_strata_are_majority_labels_with_ties_to_the_larger_label() -> None:
    labels = [0, 1, 1, 0, 0, 2, 2, 1, 0, 1]
    clusters = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    # cluster 0: 1 wins; 1: 0; 2: 2 wins 2-1; 3: tie 0/1 -> 1
    assert cluster_strata(labels, clusters).tolist() == [1, 0, 2, 1]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n_resamples": 0}, "n_resamples is 0"),
        ({"confidence": 95}, "confidence is 95"),
        ({"clusters": [0, 1]}, "one score and one cluster per label"),
        ({"labels": [], "scores": [], "clusters": []}, "no cases"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, Any], fragment: str) -> None:
    arguments: dict[str, Any] = {
        "labels": [0, 1, 1],
        "scores": [0.1, 0.2, 0.3],
        "clusters": [0, 1, 2],
        "statistic": roc_auc,
    }
    arguments.update(kwargs)
    with pytest.raises(MetricsError, match=fragment):
        cluster_bootstrap(**arguments)
