"""report.md: the same sections as the HTML, figure files beside it, escaped text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from tests.report.conftest import (
    LEAKAGE_DETAIL,
    LEAKED_KEYS,
    MetricsFactory,
    Written,
    build_context,
    build_metrics,
    failed_leakage_context,
    markdown_section,
)
from usdcm.report import FIGURE_NAMES, SECTIONS, write_report
from usdcm.report.to_markdown import escape_markdown

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def test_same_sections_as_html(written: Written) -> None:
    md_headings = re.findall(r"^## (.+)$", written.markdown, flags=re.MULTILINE)
    html_headings = re.findall(r"<h2>(.*?)</h2>", written.html)
    assert md_headings == html_headings == [spec.title for spec in SECTIONS]
    for spec in SECTIONS:
        assert f"*{spec.checklist}*" in written.markdown


def test_figure_links_are_relative_and_files_exist(written: Written) -> None:
    links = IMAGE_LINK.findall(written.markdown)
    assert len(links) == len(FIGURE_NAMES) + 1
    root = written.files.markdown.parent
    for link in links:
        assert link.startswith("figures/") and link.endswith(".png")
        path = root / link
        assert path.is_file() and path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG"
    assert sorted(root / link for link in links) == sorted(written.files.figures.values())
    for name in FIGURE_NAMES:
        assert written.files.figures[name] == root / "figures" / f"{name}.png"


def test_tables_keep_their_columns(written: Written) -> None:
    lines = written.markdown.splitlines()
    for index, line in enumerate(lines):
        if re.fullmatch(r"\| (?:---:?|:?---)(?: \| (?:---:?))* \|", line):
            columns = line.count("|")
            header, body = lines[index - 1], []
            for row in lines[index + 1 :]:
                if not row.startswith("|"):
                    break
                body.append(row)
            for row in [header, *body]:
                assert len(re.findall(r"(?<!\\)\|", row)) == columns, row


def test_markdown_escapes_html_and_pipes(tmp_path: Path, make_metrics: MetricsFactory) -> None:
    attack = "<script>alert(1)</script>|x"
    metrics = make_metrics(
        failures={
            "false_positives": [{"id": attack, "prob": 0.9, "label": "normal", "image_ids": []}],
            "false_negatives": [],
        }
    )
    files = write_report(tmp_path, metrics, build_context(intended_use=attack))
    text = files.markdown.read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|x" in text


def test_commands_are_verbatim_in_a_code_block(written: Written) -> None:
    assert "```sh\nusdcm ingest /data/export out/ --labels labels.csv\n" in written.markdown


def test_exploratory_banner_in_markdown(tmp_path: Path, make_metrics: MetricsFactory) -> None:
    threshold = {"value": 0.4, "rule": "youden", "chosen_on": "test", "exploratory": True}
    files = write_report(tmp_path, make_metrics(threshold=threshold), build_context())
    assert "> **EXPLORATORY" in files.markdown.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("a_b *c* [d](e)", "a\\_b \\*c\\* \\[d\\](e)"),
        ("1. first", "1\\. first"),
        ("# not a heading", "\\# not a heading"),
        ("x & y < z", "x &amp; y &lt; z"),
    ],
)
def test_escape_markdown(text: str, expected: str) -> None:
    assert escape_markdown(text) == expected


def test_failed_leakage_opens_the_markdown_summary(tmp_path: Path) -> None:
    files = write_report(tmp_path, build_metrics(), failed_leakage_context())
    text = files.markdown.read_text(encoding="utf-8")
    assert text.index("LEAKAGE CHECK FAILED") < text.index("AUC")
    blocks = markdown_section(text, "Summary").strip().split("\n\n")
    assert blocks[0].startswith("*TRIPOD")  # the checklist line, then the banner
    assert blocks[1].startswith("> **LEAKAGE CHECK FAILED: 3 patients and 2 studies")
    assert escape_markdown(LEAKAGE_DETAIL) in blocks[1]
    assert "\\[leakage\\_failed\\]" in markdown_section(text, "Limitations")
    assert not any(key in text for key in LEAKED_KEYS)


def test_changed_manifest_in_the_markdown_summary(tmp_path: Path) -> None:
    check = {"status": "changed", "expected_sha256": "ab" * 32, "actual_sha256": "cd" * 32}
    context = build_context(model={**build_context().model, "manifest_check": check})
    text = write_report(tmp_path, build_metrics(), context).markdown.read_text("utf-8")
    summary = markdown_section(text, "Summary")
    assert "> **Warning:** The training manifest changed after training" in summary
    assert "ab" * 32 in summary and "cd" * 32 in summary
    assert "\\[manifest\\_changed\\]" in markdown_section(text, "Limitations")
