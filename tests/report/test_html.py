"""report.html: one offline file, every section, valid embedded PNGs, escaped strings."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.report.conftest import (
    FALSE_POSITIVE_ID,
    LEAKAGE_DETAIL,
    LEAKED_KEYS,
    Metrics,
    MetricsFactory,
    Written,
    build_context,
    build_metrics,
    choose_threshold_on_val,
    failed_leakage_context,
    html_section,
    prediction_rows,
    summarize_rows,
    tiny_png,
)
from usdcm.report import FIGURE_NAMES, SECTIONS, ReportContext, write_report
from usdcm.report.document import PRIVACY_STATEMENT
from usdcm.report.figures import FIGURE_PIXELS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_SHARE = {"shared_patients": 0, "shared_studies": 0}
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]*)"')


def _h2(html: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", html)


def test_html_references_nothing_outside_itself(written: Written) -> None:
    html = written.html
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html
    for attribute in re.findall(r'\b(?:src|href)="([^"]*)"', html):
        assert attribute.startswith(("data:image/png;base64,", "#")), attribute[:60]
    assert "Content-Security-Policy" in html


def test_report_dir_holds_only_the_report_files(written: Written) -> None:
    out = written.files.html.parent
    assert written.files.html == out / "report.html"
    assert {path.name for path in out.iterdir()} == {"report.html", "report.md", "figures"}
    assert not list(out.rglob("*.tmp")), "atomic writes leave no temp file"
    assert not (out / "metrics.json").exists()


def test_every_section_in_order_with_its_checklist_items(written: Written) -> None:
    assert _h2(written.html) == [spec.title for spec in SECTIONS]
    for spec in SECTIONS:
        assert f'<section id="{spec.key}"' in written.html
        assert f'<p class="checklist">{spec.checklist}</p>' in written.html
    assert "TRIPOD+AI" in written.html and "CLAIM 2, 38" in written.html
    assert "STARD 2, 24" in written.html


def test_figures_are_embedded_valid_pngs(written: Written) -> None:
    payloads = DATA_URI.findall(written.html)
    assert len(payloads) == len(FIGURE_NAMES) + 1  # plus one failure thumbnail
    sizes = []
    for payload in payloads:
        png = base64.b64decode(payload, validate=True)
        assert png.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
        with Image.open(io.BytesIO(png)) as image:
            sizes.append(image.size)
    assert sizes.count(FIGURE_PIXELS) == len(FIGURE_NAMES)
    assert (16, 16) in sizes


def test_summary_states_auc_sensitivity_specificity_n_prevalence(written: Written) -> None:
    summary = written.html.split('<section id="summary"', 1)[1].split("</section>", 1)[0]
    for text in (
        "AUC",
        "Sensitivity",
        "Specificity",
        "95% CI",
        "240 studies, 80 abnormal",
        "33.3%",
    ):
        assert text in summary
    assert (
        "At the threshold chosen on validation, the model found 60 of 80 abnormal studies and "
        "cleared 127 of 160 normal ones." in summary
    )
    assert summary.count("data:image/png;base64,") == 2  # ROC with its band, confusion matrix
    assert "studies" in summary and "youden" in summary
    assert 'class="banner"' not in written.html
    assert PRIVACY_STATEMENT in written.html


def test_results_show_threshold_confusion_matrix_and_curves(written: Written) -> None:
    results = written.html.split('<section id="results"', 1)[1].split("</section>", 1)[0]
    threshold = choose_threshold_on_val(prediction_rows())  # youden on the val studies
    assert f"Threshold: {threshold:.3f}" in results and "chosen on validation" in results
    assert "Confusion matrix (counts)" in results
    assert "Confusion matrix (row-normalised)" in results
    assert results.count("data:image/png;base64,") == 1  # PR; ROC and confusion in the Summary
    assert "AP " in results and "PPV" in results and "NPV" in results


def test_failure_cases_list_ids_and_thumbnail(written: Written) -> None:
    failures = written.html.split('<section id="failures"', 1)[1].split("</section>", 1)[0]
    assert FALSE_POSITIVE_ID in failures
    assert "(+1 more)" in failures  # four image ids, three shown
    assert failures.count('class="thumb"') == 1


def test_exploratory_threshold_shows_banner(tmp_path: Path, make_metrics: MetricsFactory) -> None:
    threshold = {"value": 0.42, "rule": "youden", "chosen_on": "test", "exploratory": True}
    files = write_report(tmp_path, make_metrics(threshold=threshold), build_context())
    html = files.html.read_text(encoding="utf-8")
    summary = html.split('<section id="summary"', 1)[1].split("</section>", 1)[0]
    assert '<p class="banner">EXPLORATORY' in summary
    assert "[exploratory_threshold]" in html


def test_untrusted_strings_are_escaped(tmp_path: Path, make_metrics: MetricsFactory) -> None:
    attack = "<script>alert('x')</script>"
    metrics = make_metrics(
        failures={
            "false_positives": [
                {"id": attack, "prob": 0.9, "label": "<b>normal</b>", "image_ids": [attack]}
            ],
            "false_negatives": [],
        },
        provenance={"note": attack},
    )
    context = build_context(
        title=f"Report {attack}",
        intended_use=attack,
        data={"sources": [attack], "manufacturers": {attack: 3}},
        model={"architecture": '"><img src=x onerror=alert(1)>', "versions": {attack: "1"}},
        commands=[f"echo '{attack}'"],
        failure_thumbnails={attack: tiny_png()},
    )
    html = write_report(tmp_path, metrics, context).html.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "<b>normal" not in html
    assert "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html


def test_missing_and_none_values_read_in_words(tmp_path: Path) -> None:
    metrics = {
        "level": "image",
        "n": 10,
        "n_positive": 0,
        "prevalence": 0.0,
        "auc": {"value": None, "ci95": [None, None], "method": "delong", "bootstrap_ci95": None},
        "sensitivity": {"value": None, "ci95": None, "k": 0, "n": 0},
        "roc": {"fpr": [], "tpr": []},
        "pr": None,
        "reliability": {"bin_edges": None, "mean_predicted": [None], "observed": [None]},
        "confusion_matrix": None,
        "brier": float("nan"),
        "subgroups": {},
        "failures": None,
        "multiclass": None,
    }
    files = write_report(tmp_path, metrics, ReportContext())
    html = files.html.read_text(encoding="utf-8")
    assert _h2(html) == [spec.title for spec in SECTIONS]
    text = DATA_URI.sub("", html)
    assert "not computed" in text and not re.search(r"\bnan\b", text, flags=re.IGNORECASE)
    assert "n/a" not in text  # every missing value is named in words
    assert len(DATA_URI.findall(html)) == len(FIGURE_NAMES)
    assert "[auc_undefined]" in html


def test_multiclass_auc_table(tmp_path: Path, make_metrics: MetricsFactory) -> None:
    multiclass = {
        "per_class": {"cyst": {"value": 0.91, "ci95": [0.85, 0.95]}, "solid": {"value": None}},
        "macro": {"value": 0.88, "ci95": [0.82, 0.93]},
        "method": "one-vs-rest",
    }
    html = write_report(tmp_path, make_metrics(multiclass=multiclass), build_context())
    text = html.html.read_text(encoding="utf-8")
    assert "One-vs-rest AUC per class (one-vs-rest)" in text
    assert "macro average" in text and "0.910" in text


def test_print_css_breaks_pages_and_keeps_figures_whole(written: Written) -> None:
    assert "@media print" in written.html and "@page" in written.html
    assert "break-before: page" in written.html
    assert "break-inside: avoid" in written.html


def test_rewriting_gives_identical_files(tmp_path: Path, written: Written) -> None:
    context = build_context(failure_thumbnails={FALSE_POSITIVE_ID: tiny_png()})
    metrics = summarize_rows(prediction_rows())  # computed again by the metrics code
    again = write_report(tmp_path, metrics, context)
    assert again.html.read_text(encoding="utf-8") == written.html


def test_failed_leakage_is_the_first_thing_the_report_says(tmp_path: Path) -> None:
    files = write_report(tmp_path, build_metrics(), failed_leakage_context())
    html = files.html.read_text(encoding="utf-8")
    body = html.split("<body>", 1)[1]
    first = body.index("LEAKAGE CHECK FAILED")
    assert first < body.index("AUC") and first < body.index('<section id="summary"')
    summary = html_section(html, "summary")
    opening = summary.split("<p", 2)[2]  # past the checklist line: the first block
    assert opening.startswith(' class="banner">LEAKAGE CHECK FAILED: 3 patients and 2 studies')
    assert summary.index("LEAKAGE CHECK FAILED") < summary.index("AUC")
    assert LEAKAGE_DETAIL.replace("'", "&#x27;") in summary
    assert "[leakage_failed]" in html_section(html, "limitations")
    split = html_section(html, "split")
    assert "<td>Leakage check</td><td>failed</td>" in split
    assert "<td>Patients also in training or validation</td><td>3</td>" in split
    assert not any(key in html for key in LEAKED_KEYS)


def test_failed_leakage_banner_comes_before_the_exploratory_one(
    tmp_path: Path, make_metrics: MetricsFactory
) -> None:
    threshold = {"value": 0.42, "rule": "youden", "chosen_on": "test", "exploratory": True}
    metrics = make_metrics(threshold=threshold)
    html = write_report(tmp_path, metrics, failed_leakage_context()).html.read_text("utf-8")
    summary = html_section(html, "summary")
    assert summary.index("LEAKAGE CHECK FAILED") < summary.index("EXPLORATORY")


@pytest.mark.parametrize(
    ("leakage", "banner", "code"),
    [
        ("passed", False, None),  # an older evaluation.json: the plain string is the status
        ({"status": "passed", "detail": "No patient is in two splits."}, False, None),
        ("failed", True, "leakage_failed"),
        (
            {"status": "not checkable", "detail": "Re-ingest with --secret-file.", **NO_SHARE},
            False,
            "leakage_not_checkable",
        ),
    ],
)
def test_leakage_status_in_the_report(
    tmp_path: Path, metrics: Metrics, leakage: object, banner: bool, code: str | None
) -> None:
    context = build_context(split={**build_context().split, "leakage_check": leakage})
    html = write_report(tmp_path, metrics, context).html.read_text("utf-8")
    assert ("LEAKAGE CHECK FAILED" in html) is banner
    limitations = html_section(html, "limitations")
    assert re.findall(r"\[(leakage_\w+)\]", limitations) == ([code] if code else [])
    status = leakage if isinstance(leakage, str) else leakage["status"]  # type: ignore[index]
    assert f"<td>Leakage check</td><td>{status}</td>" in html_section(html, "split")
    if code == "leakage_not_checkable":
        assert "Leakage check: not checkable" in html_section(html, "summary")
        assert "Re-ingest with --secret-file." in limitations


def test_changed_manifest_is_stated_in_the_summary_and_model(
    tmp_path: Path, metrics: Metrics
) -> None:
    expected, actual = "ab" * 32, "cd" * 32
    check = {"status": "changed", "expected_sha256": expected, "actual_sha256": actual}
    context = build_context(model={**build_context().model, "manifest_check": check})
    html = write_report(tmp_path, metrics, context).html.read_text("utf-8")
    summary = html_section(html, "summary")
    assert "The training manifest changed after training" in summary
    assert expected in summary and actual in summary
    assert "[manifest_changed]" in html_section(html, "limitations")
    model = html_section(html, "model")
    assert "Training manifest check" in model and "<td>Status</td><td>changed</td>" in model
    assert "manifest_check." not in model  # shown once, not again under Other details


def test_matched_manifest_is_shown_but_not_flagged(written: Written, tmp_path: Path) -> None:
    check = {"status": "matched", "expected_sha256": "ab" * 32, "actual_sha256": "ab" * 32}
    context = build_context(model={**build_context().model, "manifest_check": check})
    html = write_report(tmp_path, build_metrics(), context).html.read_text("utf-8")
    assert "<td>Status</td><td>matched</td>" in html_section(html, "model")
    assert "changed after training" not in html
    assert "[manifest_changed]" not in html
    assert "changed after training" not in written.html
