"""write_pdf_with_chromium without Chromium: returns False and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.conftest import Written
from usdcm.report import write_pdf_with_chromium
from usdcm.report.pdf import chromium_command, find_chromium


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
