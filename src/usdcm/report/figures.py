"""The report's figures as PNG bytes: ROC, precision-recall, reliability, confusion matrix.

Owns how each figure looks and that it is rendered headless (Agg) at a fixed size; never
writes a file and never computes a metric (it plots what the metrics dict holds). Figures
are built with :class:`matplotlib.figure.Figure`, not pyplot, so none is left registered.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from usdcm.report._format import NA, as_float, as_int, fmt_num, get

FIGURE_NAMES: tuple[str, ...] = ("roc", "pr", "reliability", "confusion")
"""The figures :func:`render_figures` returns, in this order."""

FIGURE_INCHES: tuple[float, float] = (5.0, 4.0)
FIGURE_DPI = 120
FIGURE_PIXELS: tuple[int, int] = (600, 480)
"""Width and height of every figure in pixels (:data:`FIGURE_INCHES` at :data:`FIGURE_DPI`)."""

_CURVE = "#1f4e8c"
_REFERENCE = "#888888"


@contextlib.contextmanager
def _figure() -> Iterator[Any]:
    """A fresh headless figure of fixed size, styled the same whatever the user's rc."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    with matplotlib.rc_context(
        {
            "font.size": 9.0,
            "axes.titlesize": 10.0,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.fontsize": 8.0,
            "figure.facecolor": "white",
            "savefig.facecolor": "white",
        }
    ):
        figure = Figure(figsize=FIGURE_INCHES, dpi=FIGURE_DPI, layout="constrained")
        try:
            yield figure
        finally:
            figure.clear()


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    # no "Software" text chunk: the bytes do not depend on the matplotlib version string
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _pairs(xs: object, ys: object) -> tuple[list[float], list[float]]:
    """Pairs of finite numbers from two parallel lists; anything else is dropped."""
    if not isinstance(xs, Sequence) or not isinstance(ys, Sequence):
        return [], []
    kept = [
        (x, y)
        for x, y in zip((as_float(v) for v in xs), (as_float(v) for v in ys), strict=False)
        if x is not None and y is not None
    ]
    return [x for x, _ in kept], [y for _, y in kept]


def _no_data(axes: Any, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes)


def _unit_axes(axes: Any, xlabel: str, ylabel: str, title: str) -> None:
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)


def render_roc(metrics: Mapping[str, Any]) -> bytes:
    """The ROC curve of ``metrics["roc"]`` with the chance diagonal, as PNG bytes.

    Parameters
    ----------
    metrics : mapping
        The metrics dict; ``roc.fpr``, ``roc.tpr`` and ``auc`` are used.

    Returns
    -------
    bytes
        A :data:`FIGURE_PIXELS` PNG; it says "no data" when the curve is missing.
    """
    fpr, tpr = _pairs(get(metrics, "roc", "fpr"), get(metrics, "roc", "tpr"))
    with _figure() as figure:
        axes = figure.subplots()
        axes.plot([0, 1], [0, 1], linestyle="--", color=_REFERENCE, label="chance")
        if fpr:
            label = f"AUC {fmt_num(get(metrics, 'auc', 'value'))}"
            axes.plot(fpr, tpr, color=_CURVE, linewidth=2, label=label)
        else:
            _no_data(axes, f"no ROC curve ({NA})")
        _unit_axes(axes, "1 - specificity (false positive rate)", "sensitivity", "ROC curve")
        axes.legend(loc="lower right")
        return _png(figure)


def render_pr(metrics: Mapping[str, Any]) -> bytes:
    """The precision-recall curve with its AP and the prevalence baseline, as PNG bytes.

    Parameters
    ----------
    metrics : mapping
        The metrics dict; ``pr.precision``, ``pr.recall``, ``pr.ap`` and ``prevalence``.

    Returns
    -------
    bytes
        A :data:`FIGURE_PIXELS` PNG; it says "no data" when the curve is missing.
    """
    recall, precision = _pairs(get(metrics, "pr", "recall"), get(metrics, "pr", "precision"))
    prevalence = as_float(metrics.get("prevalence"))
    with _figure() as figure:
        axes = figure.subplots()
        if prevalence is not None:
            axes.axhline(
                prevalence,
                linestyle="--",
                color=_REFERENCE,
                label=f"prevalence {fmt_num(prevalence)}",
            )
        if recall:
            label = f"AP {fmt_num(get(metrics, 'pr', 'ap'))}"
            axes.plot(recall, precision, color=_CURVE, linewidth=2, label=label)
        else:
            _no_data(axes, f"no precision-recall curve ({NA})")
        _unit_axes(axes, "recall (sensitivity)", "precision (PPV)", "Precision-recall curve")
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="lower left")
        return _png(figure)


def render_reliability(metrics: Mapping[str, Any]) -> bytes:
    """The reliability diagram (observed vs predicted per bin) over a count histogram, as PNG.

    Parameters
    ----------
    metrics : mapping
        The metrics dict; ``reliability`` (``bin_edges``, ``mean_predicted``, ``observed``,
        ``count``), ``ece`` and ``brier``.

    Returns
    -------
    bytes
        A :data:`FIGURE_PIXELS` PNG; empty bins (``None``) are left out.
    """
    reliability = metrics.get("reliability")
    predicted, observed = _pairs(get(reliability, "mean_predicted"), get(reliability, "observed"))
    raw_edges = get(reliability, "bin_edges") or []
    edges = [edge for edge in (as_float(raw) for raw in raw_edges) if edge is not None]
    counts = [as_int(count) or 0 for count in get(reliability, "count") or []]
    with _figure() as figure:
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        top.plot([0, 1], [0, 1], linestyle="--", color=_REFERENCE, label="perfect calibration")
        if predicted:
            label = (
                f"model (ECE {fmt_num(get(metrics, 'ece', 'value'))}, "
                f"Brier {fmt_num(metrics.get('brier'))})"
            )
            top.plot(predicted, observed, marker="o", color=_CURVE, label=label)
        else:
            _no_data(top, f"no reliability data ({NA})")
        _unit_axes(top, "", "observed frequency", "Reliability diagram")
        top.legend(loc="upper left")
        if counts and len(edges) == len(raw_edges) == len(counts) + 1:
            widths = [high - low for low, high in zip(edges[:-1], edges[1:], strict=True)]
            bottom.bar(
                edges[:-1], counts, width=widths, align="edge", color="#b8c7de", edgecolor=_CURVE
            )
        bottom.set_xlabel("mean predicted probability")
        bottom.set_ylabel("count")
        return _png(figure)


def _matrix(value: object) -> list[list[float | None]]:
    if not isinstance(value, Sequence):
        return []
    rows = []
    for row in value:
        if not isinstance(row, Sequence):
            return []
        rows.append([as_float(cell) for cell in row])
    return rows


def render_confusion(metrics: Mapping[str, Any]) -> bytes:
    """The confusion matrix as a heatmap of row-normalised rates, annotated with counts.

    Parameters
    ----------
    metrics : mapping
        The metrics dict; ``confusion_matrix`` (``labels``, ``counts``, ``normalized``);
        rows are the true class, columns the predicted class. Rates missing from
        ``normalized`` are computed from the counts.

    Returns
    -------
    bytes
        A :data:`FIGURE_PIXELS` PNG.
    """
    matrix = metrics.get("confusion_matrix")
    counts = _matrix(get(matrix, "counts"))
    rates = _matrix(get(matrix, "normalized"))
    labels = [str(label) for label in get(matrix, "labels") or []]
    size = len(counts)
    if len(rates) != size:
        rates = []
        for row in counts:
            total = sum(cell or 0.0 for cell in row)
            rates.append([None if cell is None or not total else cell / total for cell in row])
    if len(labels) != size:
        labels = [str(index) for index in range(size)]
    with _figure() as figure:
        axes = figure.subplots()
        axes.grid(False)
        axes.set_title("Confusion matrix (rows: true class)")
        if not size or any(len(row) != size for row in counts + rates):
            _no_data(axes, f"no confusion matrix ({NA})")
            axes.set_axis_off()
            return _png(figure)
        shown = [[0.0 if cell is None else cell for cell in row] for row in rates]
        image = axes.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        figure.colorbar(image, ax=axes, label="row-normalised rate")
        for i in range(size):
            for j in range(size):
                count, rate = counts[i][j], rates[i][j]
                text = f"{NA if count is None else int(count)}\n({fmt_num(rate, 2)})"
                color = "white" if rate is not None and rate > 0.5 else "black"
                axes.text(j, i, text, ha="center", va="center", color=color, fontsize=11)
        axes.set_xticks(range(size), labels)
        axes.set_yticks(range(size), labels)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        return _png(figure)


def render_figures(metrics: Mapping[str, Any]) -> dict[str, bytes]:
    """Every figure of the report, ``{name: PNG bytes}`` in :data:`FIGURE_NAMES` order.

    Examples
    --------
    >>> figures = render_figures({})
    >>> list(figures), all(png.startswith(b"\\x89PNG") for png in figures.values())
    (['roc', 'pr', 'reliability', 'confusion'], True)
    """
    return {
        "roc": render_roc(metrics),
        "pr": render_pr(metrics),
        "reliability": render_reliability(metrics),
        "confusion": render_confusion(metrics),
    }
