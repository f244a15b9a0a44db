"""The cross-validation parts of the report: each fold's training result and the OOF result."""

from __future__ import annotations

from typing import Any

from tests.report.conftest import MetricsFactory, build_context, html_section, markdown_section
from usdcm.report import build_document, render_html, render_markdown

FOLDS = [
    {"fold": 1, "best_epoch": 4, "val_auc": 0.912, "n_train": 120, "n_val": 61},
    {"fold": 2, "best_epoch": 0, "val_auc": 0.874, "n_train": 121, "n_val": 60},
]
CROSS_VALIDATION = {
    "split": "oof",
    "level": "study",
    "n": 97,
    "n_positive": 31,
    "auc": {"value": 0.8876, "ci95": [0.8215, 0.9537], "method": "DeLong"},
}


def _rendered(metrics: dict[str, Any], model: dict[str, Any]) -> tuple[str, str]:
    document = build_document(metrics, build_context(model=model), figures={})
    return render_html(document), render_markdown(document, {})


def test_folds_and_the_out_of_fold_result_are_shown(make_metrics: MetricsFactory) -> None:
    model = {**build_context().model, "ensemble": "mean of 2 fold models", "folds": FOLDS}
    html, markdown = _rendered(make_metrics(cross_validation=CROSS_VALIDATION), model)
    for model_text in (
        html_section(html, "model"),
        markdown_section(markdown, "Method"),
    ):
        assert "Cross-validation folds" in model_text
        assert "An ensemble of 2 models: mean of 2 fold models." in model_text
        assert "0.912" in model_text and "0.874" in model_text
        assert "121" in model_text and "61" in model_text
        assert "5" in model_text  # best epoch 4 (0-based) shown as train prints it
        assert "[{" not in model_text  # a table, never the raw list
    for results in (html_section(html, "results"), markdown_section(markdown, "Results")):
        assert "Cross-validation (out-of-fold)" in results
        assert "Out-of-fold, study level" in results
        assert "0.888" in results and "0.822" in results and "0.954" in results
        assert "97 (31)" in results


def test_a_plain_run_shows_no_cross_validation(make_metrics: MetricsFactory) -> None:
    html, markdown = _rendered(make_metrics(), dict(build_context().model))
    assert "Cross-validation" not in html and "Cross-validation" not in markdown
