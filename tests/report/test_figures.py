"""The figures: PNGs of a fixed size, not blank, deterministic, no figure left open."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.report.conftest import MetricsFactory
from usdcm.report import FIGURE_NAMES, render_figures
from usdcm.report.figures import (
    FIGURE_PIXELS,
    render_confusion,
    render_pr,
    render_reliability,
    render_roc,
)

RENDERERS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "roc": render_roc,
    "pr": render_pr,
    "reliability": render_reliability,
    "confusion": render_confusion,
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
