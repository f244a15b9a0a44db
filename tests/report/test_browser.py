"""report.html in a real headless Chromium: it renders and prints to PDF (slow; needs Chromium).

Skipped where Chromium is not on PATH (``apt-get install chromium`` on Debian).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.report.conftest import Written
from usdcm.report import write_pdf_with_chromium
from usdcm.report.pdf import chromium_command, find_chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="chromium is not on PATH"),
]


def test_screenshot_is_not_blank(tmp_path: Path, written: Written) -> None:
    executable = find_chromium()
    assert executable is not None
    png = tmp_path / "shot.png"
    command = chromium_command(
        executable,
        written.files.html,
        tmp_path / "profile",
        f"--screenshot={png}",
        "--window-size=1200,3000",
        "--hide-scrollbars",
    )
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert png.is_file() and png.stat().st_size > 10_000
    with Image.open(io.BytesIO(png.read_bytes())) as image:
        assert image.size == (1200, 3000)
        pixels = np.asarray(image.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50, "the page rendered text, tables and figures"
    dark = (pixels.sum(axis=2) < 200).mean()
    assert 0.001 < dark < 0.5, "some dark text on a light page"


def test_print_to_pdf(tmp_path: Path, written: Written) -> None:
    pdf = tmp_path / "report.pdf"
    assert write_pdf_with_chromium(written.files.html, pdf) is True
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 20_000
    pages = data.count(b"/Type /Page") - data.count(b"/Type /Pages")
    assert pages >= 4, f"print CSS splits the report over pages ({pages})"
