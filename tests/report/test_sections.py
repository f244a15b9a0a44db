"""The sections issue 10 added: each renders what its keys hold, and says plainly what is missing.

A report built from files written before these keys existed (an older ``evaluation.json``
without ``flow``, an older ``metrics.json`` without ``sample_size``...) still shows no "n/a"
in its Summary, Data or Results: it says what was not recorded.
"""

from __future__ import annotations

from html import escape as html_escape
from typing import Any

import pytest

from tests.report.conftest import (
    DEIDENTIFICATION,
    REFERENCE_STANDARD,
    MetricsFactory,
    build_context,
    build_flow,
    html_section,
    markdown_section,
)
from usdcm.report import ReportContext, build_document, render_html, render_markdown
from usdcm.report.checklist import SECTION_BY_KEY
from usdcm.report.document import result_sentence
from usdcm.report.to_html import print_css

NEW_KEYS = ("sample_size", "decision_curve", "recalibration")
"""metrics.json keys an older file lacks."""


def _render(metrics: dict[str, Any], context: ReportContext) -> tuple[str, str]:
    document = build_document(metrics, context, figures={})
    return render_html(document), render_markdown(document, {})


def _section(html: str, markdown: str, key: str) -> tuple[str, str]:
    return html_section(html, key), markdown_section(markdown, SECTION_BY_KEY[key].title)


def _older_context() -> ReportContext:
    """A context as an evaluation.json written before issue 10 gives it."""
    return build_context(reference_standard="", flow={}, deidentification={}, study_years={})


def test_older_files_show_no_na_in_summary_data_results(make_metrics: MetricsFactory) -> None:
    metrics = make_metrics()
    for key in NEW_KEYS:
        metrics.pop(key, None)
    metrics["auc"] = {key: metrics["auc"][key] for key in ("value", "ci95", "method")}
    metrics["threshold"].pop("convention", None)
    html, markdown = _render(metrics, _older_context())
    for key in ("summary", "data", "results"):
        for text in _section(html, markdown, key):
            assert "n/a" not in text, key
    data = _section(html, markdown, "data")[0]
    assert "was not recorded" in data  # flow, study years, de-identification
    assert (
        "Not computed" in _section(html, markdown, "sample-size")[0]
        or "not computed" in (_section(html, markdown, "sample-size")[0])
    )


def test_result_sentence_in_the_summary(make_metrics: MetricsFactory) -> None:
    metrics = make_metrics()
    sentence = result_sentence(metrics)
    assert sentence is not None
    sens, spec = metrics["sensitivity"], metrics["specificity"]
    assert sentence == (
        f"At the threshold chosen on validation, the model found {sens['k']} of {sens['n']} "
        f"abnormal studies and cleared {spec['k']} of {spec['n']} normal ones."
    )
    html, markdown = _render(metrics, build_context())
    for text in _section(html, markdown, "summary"):
        assert sentence in text
    assert result_sentence({"level": "study"}) is None


def test_reading_order_result_data_method_limitations_appendix() -> None:
    keys = [spec.key for spec in SECTION_BY_KEY.values()]
    assert keys.index("summary") < keys.index("results") < keys.index("data")
    assert keys.index("data") < keys.index("model") < keys.index("limitations")
    assert keys[-1] == "reproducibility"


def test_appendix_is_folded_in_html_and_holds_config_versions_hashes(
    make_metrics: MetricsFactory,
) -> None:
    html, markdown = _render(make_metrics(), build_context())
    appendix = html_section(html, "reproducibility")
    assert "<details>" in appendix and "</details>" in appendix
    for text in (appendix, markdown_section(markdown, SECTION_BY_KEY["reproducibility"].title)):
        assert "Configuration" in text and "optim.lr" in text
        assert "Versions" in text and "torch" in text
        assert "c0ffee" in text  # the checkpoint hash
    for key in ("summary", "results", "data", "model"):
        assert "optim.lr" not in html_section(html, key)  # no configuration dump up front
    assert "Other details" not in html


def test_reference_standard_is_shown_or_flagged(make_metrics: MetricsFactory) -> None:
    html, markdown = _render(make_metrics(), build_context())
    for text in _section(html, markdown, "reference-standard"):
        assert "Histopathology after surgery" in text
    html, _ = _render(make_metrics(), build_context(reference_standard=""))
    assert "Not stated" in html_section(html, "reference-standard")
    assert "[reference_standard_missing]" in html_section(html, "limitations")
    assert REFERENCE_STANDARD not in html


def test_flow_table_holds_every_count(make_metrics: MetricsFactory) -> None:
    flow = build_flow()
    metrics = make_metrics()
    html, markdown = _render(metrics, build_context())
    for text in _section(html, markdown, "data"):
        assert "Participant flow" in text
        for count in (
            flow["files_in_export"],
            flow["images"],
            flow["labelled"],
            flow["evaluated_images"],
            flow["scored_images"],
            *flow["by_split"].values(),
        ):
            assert f"{count:,}" in text
    assert flow["files_in_export"] == flow["images"] + sum(flow["excluded"].values())
    assert flow["labelled"] + flow["unlabelled"] == flow["images"]
    assert sum(flow["by_split"].values()) == flow["labelled"]


def test_missing_data_lists_unlabelled_excluded_and_unscored(make_metrics: MetricsFactory) -> None:
    flow = {**build_flow(), "unscored": {"decode_error": 3, "empty_frame": 1}}
    html, markdown = _render(make_metrics(), build_context(flow=flow))
    for text in _section(html, markdown, "missing-data"):
        assert "5 images had no label" in text
        assert "not" in text and "ultrasound" in text  # an exclusion reason
        assert "decode" in text and "empty" in text and "3" in text
        assert "never dropped silently" in text


def test_deidentification_says_what_was_and_was_not_done(make_metrics: MetricsFactory) -> None:
    html, markdown = _render(make_metrics(), build_context())
    data = html_section(html, "data")
    assert html_escape(DEIDENTIFICATION["pseudonyms"]) in data
    assert "990 of 1,000 images were cropped" in data and "10 had no region" in data
    assert "Not done:" in data and "Burned-in text inside the ultrasound region" in data
    assert "No DICOM UID is written" in data


def test_study_years_only_years(make_metrics: MetricsFactory) -> None:
    html, _ = _render(make_metrics(), build_context())
    data = html_section(html, "data")
    assert "2019: 300" in data and "2020: 420" in data and "12 images have no recorded" in data


def test_fairness_section_shows_sex_and_age_band(make_metrics: MetricsFactory) -> None:
    group = {"n": 120, "n_positive": 40, "prevalence": 1 / 3, "too_small": False}
    auc = {"value": 0.85, "ci95": [0.78, 0.92]}
    subgroups = {
        **make_metrics()["subgroups"],
        "sex": [{**group, "group": "F", "auc": auc}],
        "age_band": [
            {**group, "group": "40-49", "auc": auc},
            {"group": "(unknown)", "n": 3, "n_positive": 0, "too_small": True, "auc": None},
        ],
    }
    html, markdown = _render(make_metrics(subgroups=subgroups), build_context())
    for text in _section(html, markdown, "fairness"):
        assert "40-49" in text and "(unknown)" in text and "too small" in text
        assert "0.850 (95% CI 0.780–0.920)" in text
    scanners = html_section(html, "subgroups")
    assert "40-49" not in scanners and "GE Voluson E8" in scanners
    html, _ = _render(make_metrics(), build_context())
    assert "not in these metrics" in html_section(html, "fairness")
    unknown = {"sex": [{**group, "group": "unknown", "auc": auc}], "age_band": []}
    html, _ = _render(make_metrics(subgroups=unknown), build_context())
    assert "Sex and Age band: unknown for every evaluated case" in html_section(html, "fairness")


def test_recalibration_beside_the_uncalibrated_figures(make_metrics: MetricsFactory) -> None:
    recalibration = {
        "fitted_on": "val",
        "n_fit": 200,
        "uncalibrated": {"brier": 0.142, "ece": 0.118},
        "logistic": {"brier": 0.131, "ece": 0.041, "intercept": -0.2, "slope": 0.8},
        "isotonic": {"brier": 0.128, "ece": 0.022},
        "note": "fitted on validation rows only; reported beside, never replacing, the "
        "figures above",
    }
    html, markdown = _render(make_metrics(recalibration=recalibration), build_context())
    for text in _section(html, markdown, "calibration"):
        assert "Uncalibrated" in text and "Logistic" in text and "Isotonic" in text
        assert "0.131" in text and "0.022" in text and "0.800" in text
        assert "200 cases" in text and "never replacing" in text
    # the headline figures stay the uncalibrated ones
    assert f"{make_metrics()['brier']:.3f}" in html_section(html, "calibration")
    html, _ = _render(make_metrics(recalibration=None), build_context())
    assert "Not fitted" in html_section(html, "calibration")


def test_sample_size_below_target_is_shown_and_flagged(make_metrics: MetricsFactory) -> None:
    size = {
        "method": "Buderer 1996",
        "confidence": 0.95,
        "target_width": 0.2,
        "expected_sensitivity": 0.75,
        "expected_specificity": 0.79,
        "needed_positive": 73,
        "needed_negative": 63,
        "needed_total": 217,
        "n_positive": 40,
        "n_negative": 200,
        "achieved_width": {"sensitivity": 0.26, "specificity": 0.11, "auc": 0.14},
        "below_target": True,
        "explanation": "Too few positive cases for the target width.",
    }
    html, markdown = _render(make_metrics(sample_size=size), build_context())
    for text in _section(html, markdown, "sample-size"):
        assert "Buderer 1996" in text and "73" in text and "63" in text and "217" in text
        assert "0.260" in text and "Too few positive cases" in text
        assert "smaller than the target precision" in text
    assert "[sample_size_below_target]" in html_section(html, "limitations")


def test_methods_state_youden_direction_and_clustered_interval(
    make_metrics: MetricsFactory,
) -> None:
    auc = {
        **make_metrics()["auc"],
        "method": "patient-clustered bootstrap",
        "delong_ci95": [0.83, 0.91],
    }
    html, markdown = _render(make_metrics(level="image", auc=auc), build_context())
    for text in _section(html, markdown, "model"):
        assert "never flipped" in text
        assert "observed scores" in text or "observed score" in text
        assert "patient-clustered bootstrap (primary)" in text and "too narrow" in text
    results = html_section(html, "results")
    assert "AUC (patient-clustered bootstrap, primary)" in results and "AUC (DeLong)" in results


def test_decision_curve_section(make_metrics: MetricsFactory) -> None:
    html, markdown = _render(make_metrics(), build_context())
    for text in _section(html, markdown, "clinical-utility"):
        assert "net benefit" in text.lower() and "Vickers" in text
    html, _ = _render(make_metrics(decision_curve=None), build_context())
    assert "No decision curve" in html_section(html, "clinical-utility")


@pytest.mark.parametrize("css", ["", "@media print { .x { color: red } }"])
def test_print_css_is_inlined_when_present(
    css: str, monkeypatch: pytest.MonkeyPatch, make_metrics: MetricsFactory
) -> None:
    import usdcm.report.to_html as to_html

    monkeypatch.setattr(to_html, "print_css", lambda: css)
    html = render_html(build_document(make_metrics(), build_context(), figures={}))
    style = html.split("<style>", 1)[1].split("</style>", 1)[0]
    assert style.endswith(css)


def test_print_css_reads_the_packaged_file() -> None:
    from importlib import resources

    packaged = resources.files("usdcm.report").joinpath("print.css")
    expected = packaged.read_text(encoding="utf-8") if packaged.is_file() else ""
    assert print_css() == expected


def test_flow_from_evaluate_with_levels_folds_and_threshold_rows(
    make_metrics: MetricsFactory,
) -> None:
    """The extra keys evaluate writes: scored cases per level, folds, the threshold split."""
    flow = {
        **build_flow(),
        "by_split": {f"fold-{k}": 400 for k in range(5)} | {"test": 689},
        "labelled": 2689,
        "scored_by_level": {"image": 847, "series": 341, "study": 240, "patient": 160},
        "threshold_split": "oof",
        "threshold_unscored": {"decode_error": 2},
    }
    html, markdown = _render(make_metrics(), build_context(flow=flow))
    data = html_section(html, "data")
    assert "Labelled images in fold-4" in data and "distinct patients" in data and "160" in data
    missing = html_section(html, "missing-data")
    assert "threshold split (oof)" in missing and "decode_error" in missing
    html, _ = _render(make_metrics(), build_context(flow={**flow, "threshold_unscored": {}}))
    assert "None: every oof image was scored." in html_section(html, "missing-data")


def test_deidentification_as_evaluate_writes_it_without_a_crop_column(
    make_metrics: MetricsFactory,
) -> None:
    deid = {
        **DEIDENTIFICATION,
        "secret_fingerprint": "fp-1234",
        "region_crop": {"images": 40, "cropped": None, "without_region": None},
    }
    html, _ = _render(make_metrics(), build_context(deidentification=deid))
    data = html_section(html, "data")
    assert "Secret fingerprint: fp-1234." in data and "Pseudonyms: " in data
    assert "images were cropped" not in data and "n/a" not in data
