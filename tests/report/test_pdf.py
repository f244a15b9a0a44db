"""write_pdf_with_chromium without Chromium: returns False and writes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.report.conftest import Written, build_metrics, failed_leakage_context
from usdcm.report import write_pdf_with_chromium, write_report
from usdcm.report.pdf import chromium_command, find_chromium
from usdcm.report.to_html import CSS


def test_no_chromium_on_path_returns_false(
    tmp_path: Path, written: Written, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_chromium() is None
    pdf = tmp_path / "report.pdf"
    assert write_pdf_with_chromium(written.files.html, pdf) is False
    assert not pdf.exists()


def test_chromium_that_writes_no_pdf_returns_false(
    tmp_path: Path, written: Written, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "chromium"
    fake.write_text("#!/bin/sh\nexit 1\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    pdf = tmp_path / "report.pdf"
    assert write_pdf_with_chromium(written.files.html, pdf) is False
    assert not pdf.exists()


def test_command_is_offline_and_headless(tmp_path: Path) -> None:
    command = chromium_command("chromium", tmp_path / "report.html", tmp_path / "profile")
    assert "--headless" in command and "--no-sandbox" in command
    assert "--disable-background-networking" in command
    assert f"--user-data-dir={tmp_path / 'profile'}" in command
    assert command[-1] == (tmp_path / "report.html").as_uri()


FAKE_CHROMIUM = """#!{python}
# Stands in for Chromium's --print-to-pdf: "prints" the page's text, tags removed.
import html, re, sys, urllib.parse, urllib.request
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--print-to-pdf="))
page = open(urllib.request.url2pathname(urllib.parse.urlparse(sys.argv[-1]).path)).read()
body = page.split("<body>", 1)[1]
text = html.unescape(re.sub(r"<[^>]+>", " ", body))
open(out, "wb").write(b"%PDF-1.4\\n" + text.encode("utf-8"))
"""


def test_failed_leakage_opens_the_pdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PDF is printed from report.html, whose print CSS keeps the banner first and red."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "chromium"
    fake.write_text(FAKE_CHROMIUM.format(python=sys.executable), encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    files = write_report(tmp_path / "out", build_metrics(), failed_leakage_context(), pdf=True)
    assert files.pdf is not None
    text = files.pdf.read_bytes().decode("utf-8")
    assert text.startswith("%PDF")
    assert text.index("LEAKAGE CHECK FAILED: 3 patients and 2 studies") < text.index("AUC")
    printed = CSS.split("@media print", 1)[1]
    assert "display: none" not in printed.replace("nav.toc { display: none; }", "")
    assert "p.banner" in printed and "print-color-adjust: exact" in printed
