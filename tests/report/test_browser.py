"""report.html in a real headless Chromium: the screen rendering is a page, not a blank.

Needs Chromium (``apt-get install chromium`` on Debian): skipped without it, except under
``CI=true``, where it fails (``.ci/run`` installs it). The PDF is checked in test_pdf.py.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from tests.report.conftest import Written
from tests.report.test_pdf import require_chromium
from usdcm.report.pdf import chromium_command


def test_screenshot_is_not_blank(tmp_path: Path, written: Written) -> None:
    executable = require_chromium()
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
