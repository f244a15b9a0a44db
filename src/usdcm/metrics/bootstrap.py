"""The patient-clustered, stratified percentile bootstrap.

Owns the resampling of clusters (patients) and the percentile interval of any statistic of
``(labels, scores)``. Knows nothing of which statistic it is given, nor of CSV rows.

Images (or series, or studies) of one patient are correlated, so whole clusters are drawn
with replacement, never single cases. Clusters are stratified by their majority label, and
every stratum keeps its number of clusters in every resample; that keeps the prevalence
near the observed one and makes resamples without a class rare.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from usdcm.errors import MetricsError, UndefinedMetricError

Statistic = Callable[[Any, Any], float]
"""A function ``statistic(labels, scores) -> float`` of numpy arrays indexed by case.

It raises :class:`~usdcm.errors.UndefinedMetricError` (or returns NaN) where it is
undefined, for example an AUC on a resample with one class.
"""

DEFAULT_RESAMPLES = 2000
"""Number of resamples unless told otherwise."""


@dataclass(frozen=True)
class BootstrapResult:
    """The percentile interval of a statistic over clustered resamples.

    Attributes
    ----------
    estimate : float
        The statistic on the original data (NaN if undefined there).
    ci95 : tuple of float
        Percentile interval at the requested confidence (named for the usual 95%);
        ``(nan, nan)`` when no resample gave a value.
    resamples : int
        Number of resamples drawn.
    skipped : int
        Resamples on which the statistic was undefined; they take no part in ``ci95``.
    seed : int
        Seed of the :func:`numpy.random.default_rng` generator that drew the resamples.
    stratified : bool
        Whether clusters were drawn within strata of their majority label.
    """

    estimate: float
    ci95: tuple[float, float]
    resamples: int
    skipped: int
    seed: int
    stratified: bool


def cluster_strata(labels: npt.ArrayLike, cluster_codes: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """The majority label of each cluster, as an index into the sorted distinct labels.

    A tie between labels goes to the larger label, so in a binary problem a cluster with as
    many positive as negative cases counts as positive.

    Parameters
    ----------
    labels : array_like
        One label per case (any sortable values).
    cluster_codes : array_like of int
        Cluster index ``0 .. n_clusters - 1`` of each case; every index occurs.

    Returns
    -------
    numpy.ndarray of int
        The stratum of each cluster.

    Examples
    --------
    >>> cluster_strata([0, 1, 1, 0, 0], [0, 0, 0, 1, 2]).tolist()
    [1, 0, 0]
    >>> cluster_strata([0, 1], [0, 0]).tolist()
    [1]
    """
    _, label_codes = np.unique(np.asarray(labels), return_inverse=True)
    codes = np.asarray(cluster_codes, dtype=np.intp)
    n_clusters = int(codes.max()) + 1 if codes.size else 0
    table = np.zeros((n_clusters, int(label_codes.max(initial=-1)) + 1), dtype=np.intp)
    np.add.at(table, (codes, label_codes.ravel()), 1)
    # argmax returns the first maximum; reversing the columns makes it the last (largest label)
    last_maximum = table.shape[1] - 1 - np.argmax(table[:, ::-1], axis=1)
    return np.asarray(last_maximum, dtype=np.intp)


def cluster_bootstrap(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    clusters: npt.ArrayLike,
    statistic: Statistic,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
    stratify: bool = True,
) -> BootstrapResult:
    """Percentile confidence interval of ``statistic`` by resampling whole clusters.

    Each resample draws, within every stratum (clusters sharing a majority label, see
    :func:`cluster_strata`), as many clusters as the stratum holds, with replacement, and
    evaluates ``statistic`` on all cases of the drawn clusters (a cluster drawn twice
    counts twice). Resamples on which the statistic raises
    :class:`~usdcm.errors.UndefinedMetricError` or returns a non-finite value are
    skipped and counted. The interval holds the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles (numpy's default linear interpolation) of the rest.

    The resamples depend only on ``seed``, ``n_resamples``, ``stratify``, the clusters
    and the strata, so two statistics bootstrapped with the same arguments see the same
    resamples.

    Parameters
    ----------
    labels : array_like
        One label per case; passed to ``statistic`` and used for the strata.
    scores : array_like
        One score (or a row of scores) per case along the first axis.
    clusters : array_like
        The cluster (``patient_key``) of each case.
    statistic : callable
        ``statistic(labels, scores) -> float`` on numpy arrays.
    n_resamples : int, default 2000
        Number of resamples, at least 1.
    seed : int, default 0
        Seed of :func:`numpy.random.default_rng`.
    confidence : float, default 0.95
        Level of the two-sided interval.
    stratify : bool, default True
        Draw within strata of the clusters' majority label; False draws from all clusters.

    Returns
    -------
    BootstrapResult

    Raises
    ------
    MetricsError
        Inputs of different lengths, no cases, ``n_resamples < 1`` or a bad ``confidence``.

    Examples
    --------
    >>> from usdcm.metrics.delong import roc_auc
    >>> labels = [0, 0, 0, 1, 1, 1, 0, 1]
    >>> scores = [0.1, 0.2, 0.6, 0.5, 0.7, 0.9, 0.3, 0.8]
    >>> clusters = ["a", "a", "b", "c", "c", "d", "e", "f"]
    >>> result = cluster_bootstrap(labels, scores, clusters, roc_auc, n_resamples=200)
    >>> result.estimate, result.resamples, result.skipped
    (0.9375, 200, 0)
    >>> low, high = result.ci95
    >>> 0.5 < low < 0.9375 <= high <= 1.0
    True
    """
    if n_resamples < 1:
        message = f"n_resamples is {n_resamples!r}; expected at least 1 (2000 is usual)."
        raise MetricsError(message)
    if not 0 < confidence < 1:
        message = f"confidence is {confidence!r}; expected a level in (0, 1), such as 0.95."
        raise MetricsError(message)
    label_array = np.asarray(labels)
    score_array = np.asarray(scores)
    cluster_array = np.asarray(clusters)
    n = label_array.shape[0] if label_array.ndim else 0
    if n == 0:
        message = "the bootstrap got no cases; pass at least one labelled case."
        raise MetricsError(message)
    if score_array.shape[:1] != (n,) or cluster_array.shape != (n,):
        message = (
            f"the bootstrap got {n} labels, scores of shape {score_array.shape} and clusters "
            f"of shape {cluster_array.shape}; expected one score and one cluster per label."
        )
        raise MetricsError(message)

    estimate = _evaluate(statistic, label_array, score_array)
    _, cluster_codes = np.unique(cluster_array, return_inverse=True)
    cluster_codes = cluster_codes.ravel()
    order = np.argsort(cluster_codes, kind="stable")
    sizes = np.bincount(cluster_codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if stratify:
        strata = cluster_strata(label_array, cluster_codes)
        groups = [np.flatnonzero(strata == stratum) for stratum in np.unique(strata)]
    else:
        groups = [np.arange(sizes.size)]

    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(n_resamples):
        drawn = np.concatenate([group[rng.integers(0, group.size, group.size)] for group in groups])
        lengths = sizes[drawn]
        offsets = np.cumsum(lengths) - lengths
        positions = np.repeat(starts[drawn] - offsets, lengths) + np.arange(lengths.sum())
        index = order[positions]
        value = _evaluate(statistic, label_array[index], score_array[index])
        if math.isfinite(value):
            values.append(value)
    skipped = n_resamples - len(values)
    if values:
        alpha = (1 - confidence) / 2
        low, high = np.quantile(np.asarray(values), [alpha, 1 - alpha])
        ci95 = (float(low), float(high))
    else:
        ci95 = (math.nan, math.nan)
    return BootstrapResult(estimate, ci95, n_resamples, skipped, seed, stratify)


def _evaluate(statistic: Statistic, labels: Any, scores: Any) -> float:
    try:
        return float(statistic(labels, scores))
    except UndefinedMetricError:
        return math.nan
