"""Print the HTML report to PDF with a headless Chromium, when one is installed.

Owns the Chromium command line and the atomic write of its PDF; never installs anything
and never needs the network (the report loads nothing). usdcm adds no PDF dependency: no
pure-Python HTML-to-PDF renderer ships with it, so without Chromium there is no PDF.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from usdcm.atomic import atomic_write_bytes

CHROMIUM_NAMES: tuple[str, ...] = ("chromium", "chromium-browser")
"""Executables looked up on ``PATH``, in this order."""

CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
)
"""Flags for a headless run that makes no network request of its own."""


def find_chromium() -> str | None:
    """The path of the first of :data:`CHROMIUM_NAMES` on ``PATH``, or ``None``."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_command(executable: str, html_path: Path, profile: Path, *extra: str) -> list[str]:
    """The Chromium command line for ``html_path`` with a throw-away ``profile`` folder.

    >>> chromium_command("chromium", Path("/r/report.html"), Path("/t"), "--x")[-2:]
    ['--x', 'file:///r/report.html']
    """
    return [
        executable,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *extra,
        html_path.resolve().as_uri(),
    ]


def write_pdf_with_chromium(html_path: Path, pdf_path: Path, *, timeout: float = 120.0) -> bool:
    """Print ``html_path`` to ``pdf_path`` (A4, the page's print CSS) with headless Chromium.

    Parameters
    ----------
    html_path : Path
        The ``report.html`` to print.
    pdf_path : Path
        Where the PDF goes; written atomically, left untouched on failure.
    timeout : float
        Seconds Chromium may take.

    Returns
    -------
    bool
        ``True`` when the PDF was written; ``False`` when Chromium is not on ``PATH``, fails,
        times out or produces no PDF.
    """
    executable = find_chromium()
    if executable is None:
        return False
    with tempfile.TemporaryDirectory(prefix="usdcm-pdf-") as tmp:
        out = Path(tmp) / "report.pdf"
        command = chromium_command(
            executable,
            html_path,
            Path(tmp) / "profile",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out}",
        )
        try:
            subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if not out.is_file():
            return False
        data = out.read_bytes()
    if not data.startswith(b"%PDF"):
        return False
    atomic_write_bytes(pdf_path, data)
    return True
