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
    FALSE_NEGATIVE_ID,
    FALSE_POSITIVE_ID,
    FALSE_POSITIVE_STUDY,
    TEST_STUDIES,
    TRAIN_STUDIES,
    UID_ROOT,
    VAL_STUDIES,
    Metrics,
    MetricsFactory,
    Written,
    build_context,
    build_metrics,
    html_section,
    markdown_section,
    prediction_rows,
    series_uid,
    study_key,
    study_uid,
    summarize_rows,
    tiny_png,
)
from usdcm.report import build_document, render_html, render_markdown, write_report
from usdcm.report.document import PRIVACY_STATEMENT, WITHHELD_UID

SECTIONS_WITHOUT_NA = (("summary", "Summary"), ("data", "Data"), ("results", "Results"))
"""The sections of a binary report with validation rows that must show every value (issue 10:
a report built by ``usdcm demo`` has no "n/a" in Summary, Data or Results)."""

READ_SECTIONS = (("summary", "Summary"), ("results", "Results"), ("model", "Method"))
"""The sections that read the metrics keys of :data:`RENAMED_KEYS`."""


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


def _read_text(html: str, markdown: str) -> tuple[str, str]:
    return (
        "".join(html_section(html, key) for key, _ in READ_SECTIONS),
        "".join(markdown_section(markdown, title) for _, title in READ_SECTIONS),
    )


@pytest.mark.parametrize("path", RENAMED_KEYS, ids=".".join)
def test_a_renamed_metrics_key_changes_the_report(path: tuple[str, ...]) -> None:
    """The report reads every key above: rename one and what it says changes.

    Where a value is legitimately absent (an older metrics file) the report says so in words
    ("not recorded", "not computed") instead of "n/a", so a renamed key no longer shows as
    "n/a"; it still cannot go unnoticed.
    """
    original = _read_text(*_rendered(build_metrics()))
    renamed = _read_text(*_rendered(_renamed(build_metrics(), path)))
    assert renamed[0] != original[0]
    assert renamed[1] != original[1]
    assert "n/a" not in renamed[0] + renamed[1]


def test_studies_and_series_are_named_by_key_never_by_uid(written: Written) -> None:
    """Issue 8, defect 3: the report and its figures' names carry keyed pseudonyms only."""
    failures = html_section(written.html, "failures")
    assert FALSE_POSITIVE_ID in failures and FALSE_NEGATIVE_ID in failures
    assert study_key("test", FALSE_POSITIVE_STUDY) == FALSE_POSITIVE_ID  # a study_key
    assert "study_key" in failures and "UID at those levels" not in failures
    assert "study_key, series_key" in PRIVACY_STATEMENT and "no DICOM UIDs" in PRIVACY_STATEMENT
    assert "by their DICOM UIDs" not in PRIVACY_STATEMENT
    names = [path.name for path in written.files.figures.values()]
    assert any(FALSE_POSITIVE_ID in name for name in names)  # the thumbnail's file name
    every_uid = {
        uid
        for split, n in (("train", TRAIN_STUDIES), ("val", VAL_STUDIES), ("test", TEST_STUDIES))
        for study in range(n)
        for uid in (study_uid(split, study), series_uid(split, study, 0))
    }
    for text in (written.html, written.markdown, *names):
        assert UID_ROOT not in text
        assert not [uid for uid in every_uid if uid in text]


def test_failure_ids_that_are_dicom_uids_are_withheld(
    tmp_path: Path, make_metrics: MetricsFactory
) -> None:
    """A metrics file from before study_key (ids were UIDs) does not publish them."""
    uid, image_uid = study_uid("test", 5), series_uid("test", 5, 0) + ".1"
    failures = {
        "false_positives": [{"id": uid, "prob": 0.9, "label": "normal", "image_ids": [image_uid]}],
        "false_negatives": [],
    }
    context = build_context(failure_thumbnails={uid: tiny_png()})
    files = write_report(tmp_path, make_metrics(failures=failures), context)
    html = files.html.read_text(encoding="utf-8")
    markdown = files.markdown.read_text(encoding="utf-8")
    for text in (html, markdown, *(path.name for path in files.figures.values())):
        assert uid not in text and image_uid not in text and UID_ROOT not in text
    assert html_section(html, "failures").count(WITHHELD_UID) == 3  # case, image, thumbnail alt
    assert html_section(html, "failures").count('class="thumb"') == 1
