"""The report of real metrics: ``summarize()`` output on generated rows, rendered in full.

Defect 8 of issue 8: the report tests once built their metrics dict by hand, so a key renamed
in ``usdcm.metrics.summary`` left them green while the real report read "n/a". These tests
render what :func:`usdcm.metrics.summarize` returns and require every number of the Summary
and the Results to be there.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.report.conftest import (
    VAL_STUDIES,
    Metrics,
    build_context,
    build_metrics,
    html_section,
    markdown_section,
    prediction_rows,
    summarize_rows,
)
from usdcm.report import build_document, render_html, render_markdown, write_report

SECTIONS_WITHOUT_NA = (("summary", "Summary"), ("results", "Results"))
"""The sections of a binary report with validation rows that must show every value."""


def _na_sections(html: str, markdown: str) -> list[str]:
    """The ``"<format> <section>"`` pairs of a report that show "n/a" (embedded PNGs ignored)."""
    found = []
    for key, title in SECTIONS_WITHOUT_NA:
        if "n/a" in html_section(html, key):
            found.append(f"html {key}")
        if "n/a" in markdown_section(markdown, title):
            found.append(f"markdown {key}")
    return found


def _rendered(metrics: Metrics) -> tuple[str, str]:
    """The HTML and Markdown of ``metrics`` without figures (fast; figures are tested apart)."""
    document = build_document(metrics, build_context(), figures={})
    return render_html(document), render_markdown(document, {})


def test_binary_report_with_val_rows_has_no_na_in_summary_and_results(tmp_path: Path) -> None:
    rows = prediction_rows()
    assert {row["split"] for row in rows} == {"train", "val", "test"}
    assert len({row["study_key"] for row in rows if row["split"] == "val"}) == VAL_STUDIES
    metrics = summarize_rows(rows)  # the real metrics code, threshold chosen on val
    assert metrics["classes"] == ["abnormal", "normal"] and metrics["multiclass"] is None
    assert metrics["threshold"]["chosen_on"] == "val"
    assert metrics["threshold"]["exploratory"] is False
    files = write_report(tmp_path, metrics, build_context())
    html = files.html.read_text(encoding="utf-8")
    markdown = files.markdown.read_text(encoding="utf-8")
    assert _na_sections(html, markdown) == []


RENAMED_KEYS: tuple[tuple[str, ...], ...] = (
    ("level",),
    ("positive_class",),
    ("n",),
    ("n_positive",),
    ("prevalence",),
    ("aggregation",),
    ("auc",),
    ("auc", "value"),
    ("auc", "ci95"),
    ("auc", "method"),
    ("auc", "bootstrap_ci95"),
    ("sensitivity",),
    ("sensitivity", "value"),
    ("sensitivity", "ci95"),
    ("sensitivity", "k"),
    ("specificity",),
    ("specificity", "n"),
    ("ppv",),
    ("npv",),
    ("accuracy",),
    ("balanced_accuracy",),
    ("balanced_accuracy", "ci95"),
    ("threshold",),
    ("threshold", "value"),
    ("threshold", "rule"),
    ("threshold", "chosen_on"),
    ("threshold", "exploratory"),
    ("pr",),
    ("pr", "ap"),
    ("confusion_matrix",),
    ("confusion_matrix", "counts"),
    ("confusion_matrix", "normalized"),
)
"""Every key the Summary and Results read, as a path into the metrics dict."""


def _renamed(metrics: Metrics, path: tuple[str, ...]) -> Metrics:
    """A copy of ``metrics`` with the key at ``path`` renamed, as a changed summary.py would."""
    renamed = copy.deepcopy(metrics)
    parent: Any = renamed
    for key in path[:-1]:
        parent = parent[key]
    parent[f"{path[-1]}_renamed"] = parent.pop(path[-1])
    return renamed


@pytest.mark.parametrize("path", RENAMED_KEYS, ids=".".join)
def test_a_renamed_metrics_key_shows_as_na(path: tuple[str, ...]) -> None:
    """The check above can fail: rename any key it relies on and "n/a" appears."""
    assert _na_sections(*_rendered(build_metrics())) == []
    found = _na_sections(*_rendered(_renamed(build_metrics(), path)))
    assert "html summary" in found or "html results" in found, found
    assert "markdown summary" in found or "markdown results" in found, found
