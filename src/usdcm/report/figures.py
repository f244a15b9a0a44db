"""The report's figures as PNG bytes: ROC, precision-recall, reliability, confusion matrix,
decision curve and the STARD participant flow diagram.

Owns how each figure looks and that it is rendered headless (Agg) at a fixed size; never
writes a file and never computes a metric (it plots what the metrics dict holds, plus the
ROC curve's pointwise confidence band, :func:`roc_band`, drawn from the curve itself).
Figures are built with :class:`matplotlib.figure.Figure`, not pyplot, so none is left
registered.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from usdcm.metrics import wilson
from usdcm.report._format import NA, as_float, as_int, fmt_int, fmt_num, get

FIGURE_NAMES: tuple[str, ...] = ("roc", "pr", "reliability", "confusion", "decision", "flow")
"""The figures :func:`render_figures` returns, in this order."""

FIGURE_INCHES: tuple[float, float] = (5.0, 4.0)
FIGURE_DPI = 120
FIGURE_PIXELS: tuple[int, int] = (600, 480)
"""Width and height of every figure in pixels (:data:`FIGURE_INCHES` at :data:`FIGURE_DPI`)."""

_CURVE = "#1f4e8c"
_BAND = "#9fb6d9"
_REFERENCE = "#888888"
_TREAT_ALL = "#b36b00"


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
    """The ROC curve of ``metrics["roc"]`` with its 95% band and the chance diagonal, as PNG.

    Parameters
    ----------
    metrics : mapping
        The metrics dict; ``roc.fpr``, ``roc.tpr``, ``auc`` and, for the band
        (:func:`roc_band`), ``roc.band`` or ``n_positive``.

    Returns
    -------
    bytes
        A :data:`FIGURE_PIXELS` PNG; it says "no data" when the curve is missing.
    """
    fpr, tpr = _pairs(get(metrics, "roc", "fpr"), get(metrics, "roc", "tpr"))
    band = roc_band(metrics)
    with _figure() as figure:
        axes = figure.subplots()
        axes.plot([0, 1], [0, 1], linestyle="--", color=_REFERENCE, label="chance")
        if band is not None:
            axes.fill_between(
                band[0], band[1], band[2], color=_BAND, alpha=0.6, step="post", label=band[3]
            )
        if fpr:
            label = f"AUC {fmt_num(get(metrics, 'auc', 'value'))}"
            axes.plot(fpr, tpr, color=_CURVE, linewidth=2, label=label)
        else:
            _no_data(axes, f"no ROC curve ({NA})")
        _unit_axes(axes, "1 - specificity (false positive rate)", "sensitivity", "ROC curve")
        axes.legend(loc="lower right")
        return _png(figure)


def roc_band(
    metrics: Mapping[str, Any],
) -> tuple[list[float], list[float], list[float], str] | None:
    """A pointwise 95% band around the ROC curve: ``(fpr, low, high, legend label)``.

    ``metrics["roc"]["band"]`` (``fpr``, ``tpr_low``, ``tpr_high``, ``method``), when the
    metrics hold one, is drawn as given. Otherwise the band is the Wilson interval of the
    sensitivity at each point of the curve, over the ``n_positive`` positive cases: it
    treats the false positive rate as fixed and the cases as independent, so it is a
    visual guide, not a simultaneous band; the AUC's own interval is in the Results.
    ``None`` when neither is available.

    >>> band = roc_band({"roc": {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.9, 1.0]}, "n_positive": 50})
    >>> [round(value, 3) for value in band[2]], band[3]
    ([0.071, 0.957, 1.0], 'pointwise 95% band (Wilson)')
    """  # noqa: E501
    given = get(metrics, "roc", "band")
    if isinstance(given, Mapping):
        fpr, low = _pairs(given.get("fpr"), given.get("tpr_low"))
        _, high = _pairs(given.get("fpr"), given.get("tpr_high"))
        if fpr and len(low) == len(high) == len(fpr):
            method = given.get("method")
            label = f"95% band ({method})" if isinstance(method, str) and method else "95% band"
            return fpr, low, high, label
    fpr, tpr = _pairs(get(metrics, "roc", "fpr"), get(metrics, "roc", "tpr"))
    n_positive = as_int(metrics.get("n_positive"))
    if not fpr or n_positive is None or n_positive < 1:
        return None
    bounds = [wilson(round(min(max(rate, 0.0), 1.0) * n_positive), n_positive) for rate in tpr]
    return (
        fpr,
        [low for low, _ in bounds],
        [high for _, high in bounds],
        ("pointwise 95% band (Wilson)"),
    )


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


def render_decision(metrics: Mapping[str, Any]) -> bytes:
    """The decision curve: net benefit against threshold probability (Vickers & Elkin 2006).

    Parameters
    ----------
    metrics : mapping
        The metrics dict; ``decision_curve`` (``thresholds``, ``model``, ``treat_all``,
        ``treat_none``).

    Returns
    -------
    bytes
        A :data:`FIGURE_PIXELS` PNG: the model against treat-all and treat-none; it says
        "no decision curve" when the metrics hold none.
    """
    curve = metrics.get("decision_curve")
    thresholds, model = _pairs(get(curve, "thresholds"), get(curve, "model"))
    _, treat_all = _pairs(get(curve, "thresholds"), get(curve, "treat_all"))
    with _figure() as figure:
        axes = figure.subplots()
        axes.set_title("Decision curve")
        axes.set_xlabel("threshold probability")
        axes.set_ylabel("net benefit")
        if not thresholds:
            _no_data(axes, "no decision curve in these metrics")
            return _png(figure)
        axes.axhline(0.0, color=_REFERENCE, linestyle="--", label="treat none")
        if len(treat_all) == len(thresholds):
            axes.plot(thresholds, treat_all, color=_TREAT_ALL, label="treat all")
        axes.plot(thresholds, model, color=_CURVE, linewidth=2, label="model")
        top = max([*model, *treat_all, 0.01])
        axes.set_ylim(-0.05 - 0.05 * top, top * 1.1)
        axes.set_xlim(0.0, 1.0)
        axes.legend(loc="upper right")
        return _png(figure)


def _count_lines(counts: object, limit: int = 3) -> list[str]:
    """``reason: n`` lines of a ``{reason: n}`` mapping, largest first, at most ``limit``."""
    if not isinstance(counts, Mapping):
        return []
    items = sorted(
        ((str(name), as_int(value) or 0) for name, value in counts.items()),
        key=lambda item: (-item[1], item[0]),
    )
    lines = [f"{name}: {count:,}" for name, count in items[:limit]]
    if len(items) > limit:
        lines.append(f"+{len(items) - limit} more reasons")
    return lines


def _total(counts: object) -> int | None:
    if not isinstance(counts, Mapping):
        return None
    return sum(as_int(value) or 0 for value in counts.values())


def flow_boxes(flow: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    r"""The flow diagram's main boxes, top to bottom, as ``(main text, side text)`` pairs.

    Each box is left out when its count is not recorded (an older ``evaluation.json``).

    >>> flow = {"files_in_export": 10, "excluded": {"not_ultrasound": 2}, "images": 8,
    ...         "unlabelled": 1, "labelled": 7, "by_split": {"train": 5, "test": 2},
    ...         "evaluated_split": "test", "evaluated_images": 2, "scored_images": 2,
    ...         "unscored": {}}
    >>> for box in flow_boxes(flow, {"level": "image", "n": 2, "n_positive": 1}):
    ...     print(box)
    ('Files in the export: 10', 'Excluded: 2\nnot_ultrasound: 2')
    ('Images: 8', 'Unlabelled: 1')
    ('Labelled images: 7', '')
    ('train: 5 | test: 2', '')
    ('Evaluated (test): 2 images', 'Not scored: 0')
    ('Scored: 2 images', '')
    ('Analysed: 2 images (1 positive, 1 negative)', '')
    """
    boxes: list[tuple[str, str]] = []
    files = as_int(flow.get("files_in_export"))
    excluded = _total(flow.get("excluded"))
    if files is not None:
        side = ""
        if excluded is not None:
            side = "\n".join([f"Excluded: {excluded:,}", *_count_lines(flow.get("excluded"))])
        boxes.append((f"Files in the export: {files:,}", side))
    images = as_int(flow.get("images"))
    if images is not None:
        unlabelled = as_int(flow.get("unlabelled"))
        side = f"Unlabelled: {unlabelled:,}" if unlabelled is not None else ""
        if files is None and excluded is not None:
            side = "\n".join(part for part in (f"Excluded at ingest: {excluded:,}", side) if part)
        boxes.append((f"Images: {images:,}", side))
    labelled = as_int(flow.get("labelled"))
    if labelled is not None:
        boxes.append((f"Labelled images: {labelled:,}", ""))
    by_split = flow.get("by_split")
    if isinstance(by_split, Mapping) and by_split:
        parts = [f"{name}: {fmt_int(n)}" for name, n in by_split.items()]
        lines = [" | ".join(parts[start : start + 3]) for start in range(0, len(parts), 3)]
        boxes.append(("\n".join(lines), ""))
    evaluated = as_int(flow.get("evaluated_images"))
    split = flow.get("evaluated_split")
    if evaluated is not None:
        name = f" ({split})" if isinstance(split, str) and split else ""
        unscored = _total(flow.get("unscored"))
        side = ""
        if unscored is not None:
            side = "\n".join([f"Not scored: {unscored:,}", *_count_lines(flow.get("unscored"))])
        boxes.append((f"Evaluated{name}: {evaluated:,} images", side))
    scored = as_int(flow.get("scored_images"))
    if scored is not None:
        boxes.append((f"Scored: {scored:,} images", ""))
    n, positives = as_int(metrics.get("n")), as_int(metrics.get("n_positive"))
    level = metrics.get("level")
    if n is not None and isinstance(level, str):
        unit = plural(level)
        detail = (
            f" ({positives:,} positive, {n - positives:,} negative)"
            if positives is not None
            else ""
        )
        boxes.append((f"Analysed: {n:,} {unit}{detail}", ""))
    return boxes


def plural(level: str) -> str:
    """The plural of a level's unit, as the report writes counts.

    >>> plural("study"), plural("series"), plural("image"), plural("patient")
    ('studies', 'series', 'images', 'patients')
    """
    return {"study": "studies", "series": "series"}.get(level, f"{level}s")


def render_flow(metrics: Mapping[str, Any], flow: Mapping[str, Any] | None = None) -> bytes:
    """The STARD 2015 item 19 participant flow diagram, as PNG bytes.

    Parameters
    ----------
    metrics : mapping
        The metrics dict; ``level``, ``n`` and ``n_positive`` give the last box (the cases
        analysed at the report's level).
    flow : mapping, optional
        ``evaluation.json`` ``flow`` (see :class:`~usdcm.report.context.ReportContext`).

    Returns
    -------
    bytes
        A :data:`FIGURE_PIXELS` PNG, one box per recorded count, exclusions to the side.
    """
    boxes = flow_boxes(flow or {}, metrics)
    with _figure() as figure:
        axes = figure.subplots()
        axes.set_axis_off()
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_title("Participant flow (STARD 2015 item 19)")
        if not boxes:
            _no_data(axes, "flow counts not recorded")
            return _png(figure)
        step = 1.0 / len(boxes)
        style = {"boxstyle": "round,pad=0.3", "facecolor": "#eef2f7", "edgecolor": _CURVE}
        side_style = {"boxstyle": "round,pad=0.3", "facecolor": "#fff6e5", "edgecolor": "#b36b00"}
        for index, (main, side) in enumerate(boxes):
            y = 1.0 - step * (index + 0.5)
            axes.text(0.32, y, main, ha="center", va="center", fontsize=7.5, bbox=style)
            if index + 1 < len(boxes):
                axes.annotate(
                    "",
                    xy=(0.32, y - step + 0.045),
                    xytext=(0.32, y - 0.045),
                    arrowprops={"arrowstyle": "->", "color": _CURVE},
                )
            if side:
                axes.annotate(
                    "",
                    xy=(0.66, y - step / 2),
                    xytext=(0.32, y - step / 2),
                    arrowprops={"arrowstyle": "->", "color": "#b36b00"},
                )
                axes.text(
                    0.68, y - step / 2, side, ha="left", va="center", fontsize=6.5, bbox=side_style
                )
        return _png(figure)


def render_figures(
    metrics: Mapping[str, Any], flow: Mapping[str, Any] | None = None
) -> dict[str, bytes]:
    """Every figure of the report, ``{name: PNG bytes}`` in :data:`FIGURE_NAMES` order.

    Examples
    --------
    >>> figures = render_figures({})
    >>> list(figures), all(png.startswith(b"\\x89PNG") for png in figures.values())
    (['roc', 'pr', 'reliability', 'confusion', 'decision', 'flow'], True)
    """
    return {
        "roc": render_roc(metrics),
        "pr": render_pr(metrics),
        "reliability": render_reliability(metrics),
        "confusion": render_confusion(metrics),
        "decision": render_decision(metrics),
        "flow": render_flow(metrics, flow),
    }
