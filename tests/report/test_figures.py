"""The figures: PNGs of a fixed size, not blank, deterministic, no figure left open."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.report.conftest import MetricsFactory, build_flow
from usdcm.report import FIGURE_NAMES, render_figures
from usdcm.report.figures import (
    FIGURE_PIXELS,
    flow_boxes,
    render_confusion,
    render_decision,
    render_flow,
    render_pr,
    render_reliability,
    render_roc,
    roc_band,
)


def hand_decision_curve(labels: list[int], probs: list[float]) -> dict[str, Any]:
    """Net benefit by its formula (Vickers & Elkin 2006): TP/n - FP/n * pt / (1 - pt)."""
    n = len(labels)
    prevalence = sum(labels) / n
    thresholds = [step / 100 for step in range(1, 100)]
    model, treat_all = [], []
    for pt in thresholds:
        tp = sum(1 for y, p in zip(labels, probs, strict=True) if p >= pt and y == 1)
        fp = sum(1 for y, p in zip(labels, probs, strict=True) if p >= pt and y == 0)
        model.append(tp / n - fp / n * pt / (1 - pt))
        treat_all.append(prevalence - (1 - prevalence) * pt / (1 - pt))
    return {
        "thresholds": thresholds,
        "model": model,
        "treat_all": treat_all,
        "treat_none": [0.0] * len(thresholds),
        "n": n,
        "prevalence": prevalence,
        "reference": "Vickers & Elkin 2006",
    }


DECISION_CURVE = hand_decision_curve(
    [1, 1, 1, 0, 0, 0, 0, 1, 0, 0], [0.9, 0.8, 0.35, 0.4, 0.2, 0.1, 0.05, 0.6, 0.3, 0.15]
)


def _decision(metrics: dict[str, Any]) -> bytes:
    return render_decision({"decision_curve": DECISION_CURVE, **metrics})


def _flow(metrics: dict[str, Any]) -> bytes:
    return render_flow(metrics, build_flow())


RENDERERS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "roc": render_roc,
    "pr": render_pr,
    "reliability": render_reliability,
    "confusion": render_confusion,
    "decision": _decision,
    "flow": _flow,
}


@pytest.fixture(autouse=True)
def no_open_figures() -> Iterator[None]:
    """Fail a test that leaves a pyplot figure registered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _pixels(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.size == FIGURE_PIXELS
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_figure_is_a_fixed_size_png_with_content(make_metrics: MetricsFactory, name: str) -> None:
    pixels = _pixels(RENDERERS[name](make_metrics()))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 20, "a plot, not a blank canvas"


def test_render_figures_returns_every_figure_in_order(make_metrics: MetricsFactory) -> None:
    figures = render_figures(make_metrics())
    assert list(figures) == list(FIGURE_NAMES)


def test_rendering_is_deterministic(make_metrics: MetricsFactory) -> None:
    metrics = make_metrics()
    assert render_roc(metrics) == render_roc(metrics)
    assert render_confusion(metrics) == render_confusion(metrics)


def test_roc_draws_the_curve_above_the_diagonal(make_metrics: MetricsFactory) -> None:
    good = _pixels(render_roc(make_metrics()))
    empty = _pixels(render_roc(make_metrics(roc={"fpr": [], "tpr": []})))
    assert not np.array_equal(good, empty)


@pytest.mark.parametrize(
    "overrides",
    [
        {"roc": None, "pr": None, "reliability": None, "confusion_matrix": None},
        {"roc": {"fpr": [0, None, 1], "tpr": [0, 0.5, None]}, "auc": {"value": None}},
        {
            "reliability": {
                "bin_edges": [0, 0.5, 1],
                "mean_predicted": [None, 0.7],
                "observed": [None, 0.6],
                "count": [0, 3],
            }
        },
        {"confusion_matrix": {"labels": ["n", "a"], "counts": [[3, None], [1, 2]]}},
        {"confusion_matrix": {"labels": [], "counts": [[1, 2, 3], [4, 5]]}},
        {"prevalence": None, "brier": float("nan")},
    ],
)
def test_missing_or_none_values_do_not_crash(
    make_metrics: MetricsFactory, overrides: dict[str, Any]
) -> None:
    for png in render_figures(make_metrics(**overrides)).values():
        _pixels(png)


def test_confusion_matrix_computes_rates_when_missing(make_metrics: MetricsFactory) -> None:
    matrix = {"labels": ["normal", "abnormal"], "counts": [[90, 10], [5, 45]]}
    with_rates = dict(matrix, normalized=[[0.9, 0.1], [0.1, 0.9]])
    assert render_confusion(make_metrics(confusion_matrix=matrix)) == render_confusion(
        make_metrics(confusion_matrix=with_rates)
    )


def test_roc_band_is_the_wilson_interval_of_each_sensitivity(make_metrics: MetricsFactory) -> None:
    from usdcm.metrics import wilson

    metrics = make_metrics()
    band = roc_band(metrics)
    assert band is not None
    fpr, low, high, label = band
    assert fpr == metrics["roc"]["fpr"] and "Wilson" in label
    for rate, lo, hi in zip(metrics["roc"]["tpr"], low, high, strict=True):
        assert (lo, hi) == wilson(round(rate * metrics["n_positive"]), metrics["n_positive"])
        assert lo <= rate <= hi


def test_roc_band_from_the_metrics_is_drawn_as_given(make_metrics: MetricsFactory) -> None:
    given = {"fpr": [0, 0.5, 1], "tpr_low": [0, 0.4, 0.9], "tpr_high": [0.2, 0.8, 1], "method": "x"}
    metrics = make_metrics(roc={**make_metrics()["roc"], "band": given})
    assert roc_band(metrics) == ([0, 0.5, 1], [0, 0.4, 0.9], [0.2, 0.8, 1], "95% band (x)")
    assert roc_band({"roc": {"fpr": [0.0], "tpr": [0.0]}}) is None  # no n_positive


def test_decision_curve_draws_the_model_against_treat_all(make_metrics: MetricsFactory) -> None:
    with_curve = _pixels(_decision(make_metrics()))
    without = _pixels(render_decision(make_metrics(decision_curve=None)))
    assert not np.array_equal(with_curve, without)


def test_flow_boxes_carry_every_count_of_the_flow(make_metrics: MetricsFactory) -> None:
    flow = build_flow()
    metrics = make_metrics()
    text = "\n".join(main + "\n" + side for main, side in flow_boxes(flow, metrics))
    for count in (
        flow["files_in_export"],
        sum(flow["excluded"].values()),
        flow["images"],
        flow["unlabelled"],
        flow["labelled"],
        *flow["by_split"].values(),
        flow["evaluated_images"],
        flow["scored_images"],
        metrics["n"],
        metrics["n_positive"],
    ):
        assert f"{count:,}" in text
    assert flow_boxes({}, {}) == []
