"""Print the HTML report to PDF with a headless Chromium, when one is installed.

Owns the Chromium command line, the copy of the page it prints and the atomic write of its
PDF; never installs anything and never needs the network (the report loads nothing). usdcm
adds no PDF dependency: no pure-Python HTML-to-PDF renderer ships with it, so without
Chromium there is no PDF (``apt-get install chromium`` on Debian; CI installs it).

Chromium prints a copy of ``report.html`` in which every ``<details>`` is open (CSS alone
cannot open one in every browser, and a closed appendix would print as its summary line)
and which carries ``print.css`` (A4, figures and table rows never split, table headers
repeated) when the page does not inline it already.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from usdcm.atomic import atomic_write_bytes
from usdcm.report.to_html import print_css

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


_CLOSED_DETAILS = re.compile(r"<details(?![^>]*\bopen\b)(?=[\s>])", re.IGNORECASE)


def printable_html(page: str, css: str | None = None) -> str:
    """``page`` as Chromium should print it: ``<details>`` open, the print CSS present.

    ``css`` (default :func:`print_css`) goes in a ``<style>`` at the end of ``<head>``
    unless the page already contains it; the page is otherwise unchanged.

    >>> printable_html("<head></head><details><summary>A</summary>x</details>", css="")
    '<head></head><details open><summary>A</summary>x</details>'
    >>> printable_html("<details open class=a>x</details>", css="")
    '<details open class=a>x</details>'
    >>> printable_html("<head></head>", css="p{}")
    '<head><style>p{}</style>\\n</head>'
    """
    css = print_css() if css is None else css
    page = _CLOSED_DETAILS.sub("<details open", page)
    if css.strip() and css.strip() not in page and "</head>" in page:
        head, rest = page.split("</head>", 1)
        page = f"{head}<style>{css}</style>\n</head>{rest}"
    return page


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
    """Print ``html_path`` to ``pdf_path`` (A4, ``print.css``) with headless Chromium.

    Chromium prints :func:`printable_html` of the page, written to a temporary folder;
    ``html_path`` itself is not changed.

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
        page = Path(tmp) / "report.html"
        page.write_text(printable_html(html_path.read_text(encoding="utf-8")), encoding="utf-8")
        command = chromium_command(
            executable,
            page,
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
