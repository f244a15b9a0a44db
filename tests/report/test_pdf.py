"""The PDF: what write_pdf_with_chromium prints, and the printed report checked page by page.

The first tests stand Chromium in with fakes. The rest print the fixtures' reports with the
real headless Chromium (Debian's ``chromium``) and read the PDF back with pypdf: A4 pages,
every figure drawn whole on exactly one page, every table row's text on one page (a table
continues on the next page only between rows, under its repeated header), ``<details>``
printed open. Without Chromium they skip, except under ``CI=true`` where they fail:
``.ci/run`` installs it, so a skip there would hide that the PDF went unchecked.
"""

from __future__ import annotations

import base64
import copy
import html
import io
import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader
from pypdf.generic import ContentStream

from tests.report.conftest import (
    Written,
    build_context,
    build_metrics,
    failed_leakage_context,
)
from usdcm.report import write_pdf_with_chromium, write_report
from usdcm.report.pdf import chromium_command, find_chromium, print_css, printable_html
from usdcm.report.to_html import CSS


def require_chromium() -> str:
    """The Chromium executable; skip without one, fail instead under ``CI=true``."""
    found = find_chromium()
    if found is None:
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail("CI=true and no chromium on PATH: .ci/run installs Debian's chromium")
        pytest.skip("chromium is not on PATH (apt-get install chromium)")
    return found


# --- without Chromium -------------------------------------------------------------------


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


def test_print_css_rules() -> None:
    """print.css: A4, nothing split, headers repeated, nothing hidden but the contents list."""
    css = print_css()
    assert re.search(r"@page\s*{[^}]*size:\s*A4", css)
    printed = css.split("@media print", 1)[1]
    assert "thead { display: table-header-group; }" in printed
    assert re.search(r"tr, th, td {[^}]*break-inside: avoid", printed)
    assert re.search(r"figure, img {[^}]*break-inside: avoid", printed)
    assert "details::details-content" in printed
    assert "display: none" not in printed.replace("nav.toc { display: none; }", "")


def test_printable_html_opens_details_and_adds_print_css() -> None:
    page = (
        "<html><head><style>p{}</style></head><body>"
        '<details><summary>A</summary>a</details><details class="x">b</details>'
        "<details open>c</details><p>&lt;details&gt;</p></body></html>"
    )
    printed = printable_html(page)
    assert printed.count("<details open") == 3 and "<p>&lt;details&gt;</p>" in printed
    assert print_css() in printed and printed.index(print_css()) < printed.index("</head>")
    assert printable_html(printed) == printed, "the CSS goes in once, already-open stays open"


def test_the_fake_prints_a_copy_and_leaves_the_report_alone(
    tmp_path: Path, written: Written, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "chromium"
    fake.write_text(FAKE_CHROMIUM.format(python=sys.executable), encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    before = written.files.html.read_bytes()
    assert write_pdf_with_chromium(written.files.html, tmp_path / "r.pdf") is True
    assert written.files.html.read_bytes() == before


# --- the PDF read back ------------------------------------------------------------------

A4_POINTS = (595.28, 841.89)
"""A4 in PDF points (210 x 297 mm)."""

Matrix = tuple[float, float, float, float, float, float]
IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def _times(m: Matrix, n: Matrix) -> Matrix:
    """The PDF matrix product ``m x n`` (``m`` applied first)."""
    a, b, c, d, e, f = m
    p, q, r, s, t, u = n
    return (
        a * p + b * r,
        a * q + b * s,
        c * p + d * r,
        c * q + d * s,
        e * p + f * r + t,
        e * q + f * s + u,
    )


@dataclass(frozen=True, eq=False)
class Picture:
    """An image: its RGB pixels, and where it is drawn (PDF) or its caption (HTML)."""

    pixels: np.ndarray[Any, np.dtype[np.uint8]]
    page: int = -1
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    caption: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """Width and height in pixels."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    def same(self, other: Picture) -> bool:
        """The same pixels, give or take re-encoding (the PDF holds the PNG's pixels again)."""
        if self.pixels.shape != other.pixels.shape:
            return False
        difference = np.abs(self.pixels.astype(np.int16) - other.pixels.astype(np.int16))
        return float(difference.mean()) <= 2.0


def _rgb(image: Image.Image) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _draws(
    reader: PdfReader, page: int, operations: Any, resources: Any, ctm: Matrix
) -> Iterator[Picture]:
    """The images drawn by ``operations`` (form XObjects followed), with their boxes."""
    stack: list[Matrix] = []
    xobjects = resources.get("/XObject") if resources is not None else None
    xobjects = xobjects.get_object() if xobjects is not None else {}
    for operands, operator in operations:
        if operator == b"q":
            stack.append(ctm)
        elif operator == b"Q":
            ctm = stack.pop()
        elif operator == b"cm":
            a, b, c, d, e, f = (float(value) for value in operands)
            ctm = _times((a, b, c, d, e, f), ctm)
        elif operator == b"Do":
            xobject = xobjects[operands[0]].get_object()
            if xobject["/Subtype"] == "/Image":
                corners = [_times((1, 0, 0, 1, x, y), ctm)[4:] for x in (0, 1) for y in (0, 1)]
                xs, ys = [x for x, _ in corners], [y for _, y in corners]
                box = (min(xs), min(ys), max(xs), max(ys))
                yield Picture(_rgb(xobject.decode_as_image()), page=page, box=box)
            elif xobject["/Subtype"] == "/Form":
                a, b, c, d, e, f = (float(v) for v in xobject.get("/Matrix", IDENTITY))
                inner = ContentStream(xobject, reader).operations
                resources = xobject.get("/Resources", resources)
                yield from _draws(reader, page, inner, resources, _times((a, b, c, d, e, f), ctm))


@dataclass
class HtmlTable:
    """One ``<table>`` of the page: its header row and body rows, as cell texts."""

    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


class _Tables(HTMLParser):
    """The tables of an HTML page (cell text only; images in cells count as no text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[HtmlTable] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append(HtmlTable())
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            table = self.tables[-1]
            if self._in_head:
                table.header = self._row
            else:
                table.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _squash(text: str) -> str:
    """``text`` as compared with the PDF's: NFKC (ligatures undone), no whitespace."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


_IMG = re.compile(r'<img[^>]*\ssrc="data:image/png;base64,([A-Za-z0-9+/=]+)"[^>]*>')
_CAPTION = re.compile(r"\s*<figcaption>(.*?)</figcaption>", re.DOTALL)


def html_pictures(page: str) -> list[Picture]:
    """Every image the page embeds, in order, with the caption of its ``<figure>`` if any."""
    found = []
    for match in _IMG.finditer(page):
        caption = _CAPTION.match(page, match.end())
        text = html.unescape(re.sub(r"<[^>]+>", "", caption.group(1))) if caption else ""
        with Image.open(io.BytesIO(base64.b64decode(match.group(1)))) as image:
            found.append(Picture(_rgb(image), caption=text))
    return found


@dataclass(frozen=True)
class Printed:
    """A page printed by Chromium: its HTML, the PDF's page sizes, texts and drawn images."""

    html: str
    pdf: Path
    sizes: list[tuple[float, float]]
    texts: list[str]
    drawn: list[Picture]
    figures: list[Picture]

    @classmethod
    def of(cls, html_path: Path, pdf: Path) -> Printed:
        """Print ``html_path`` with :func:`write_pdf_with_chromium` and read ``pdf`` back."""
        assert write_pdf_with_chromium(html_path, pdf) is True
        return cls.read(html_path, pdf)

    @classmethod
    def read(cls, html_path: Path, pdf: Path) -> Printed:
        """Read ``pdf``, printed from ``html_path``."""
        reader = PdfReader(pdf)
        sizes: list[tuple[float, float]] = []
        texts: list[str] = []
        drawn: list[Picture] = []
        for number, page in enumerate(reader.pages):
            box = page.mediabox
            sizes.append((float(box.width), float(box.height)))
            texts.append(_squash(page.extract_text()))
            operations = ContentStream(page.get_contents(), reader).operations
            drawn += _draws(reader, number, operations, page.get("/Resources"), IDENTITY)
        page_html = html_path.read_text(encoding="utf-8")
        return cls(page_html, pdf, sizes, texts, drawn, html_pictures(page_html))

    def tables(self) -> list[HtmlTable]:
        """The page's tables, parsed from its HTML."""
        parser = _Tables()
        parser.feed(self.html)
        return parser.tables


def figure_problems(printed: Printed) -> list[str]:
    """Every way an embedded figure is not drawn whole on exactly one page.

    Each image of the HTML must be drawn as often as the HTML holds it, all on one page,
    inside the page, at its own aspect ratio (a figure cut by a page break is drawn on both
    pages, each copy clipped), and its caption must be on that page too.
    """
    problems = []
    for index, figure in enumerate(printed.figures):
        name = f"figure {index} ({figure.size[0]}x{figure.size[1]} px)"
        draws = [drawn for drawn in printed.drawn if figure.same(drawn)]
        wanted = sum(1 for other in printed.figures if figure.same(other))
        pages = sorted({drawn.page + 1 for drawn in draws})
        if len(draws) != wanted or len(pages) != 1:
            problems.append(f"{name} drawn on pages {pages}")
            continue
        width, height = printed.sizes[draws[0].page]
        for drawn in draws:
            x0, y0, x1, y1 = drawn.box
            ratio = figure.size[0] / figure.size[1]
            if x0 < -0.5 or y0 < -0.5 or x1 > width + 0.5 or y1 > height + 0.5:
                problems.append(f"{name} runs off page {drawn.page + 1}: {drawn.box}")
            elif abs((x1 - x0) / (y1 - y0) - ratio) > 0.02 * ratio:
                problems.append(f"{name} is drawn clipped or distorted: {drawn.box}")
        if figure.caption and _squash(figure.caption) not in printed.texts[draws[0].page]:
            problems.append(f"{name}: its caption is not on its page {pages[0]}")
    problems += [
        f"page {drawn.page + 1} draws an image the report lacks"
        for drawn in printed.drawn
        if not any(figure.same(drawn) for figure in printed.figures)
    ]
    return problems


def table_problems(printed: Printed) -> tuple[list[str], int]:
    """Rows whose text is on no single page, headers not repeated; and tables that span pages.

    Rows are looked for in document order: each one whole on a page, after the previous
    row (on the same page or a later one). A table whose rows are on more than one page must
    show its header row on each of them, before its first row there.
    """
    problems: list[str] = []
    spanning = 0
    page, offset = 0, 0
    for number, table in enumerate(printed.tables()):
        header = "".join(_squash(cell) for cell in table.header)
        first_on: dict[int, int] = {}
        for row_number, row in enumerate(table.rows):
            key = "".join(_squash(cell) for cell in row)
            if not key:
                continue
            found = printed.texts[page].find(key, offset)
            while found < 0 and page + 1 < len(printed.texts):
                page, offset = page + 1, 0
                found = printed.texts[page].find(key)
            if found < 0:
                problems.append(f"table {number} row {row_number} is on no single page: {row}")
                page, offset = 0, 0
                continue
            first_on.setdefault(page, found)
            offset = found + len(key)
        if len(first_on) > 1:
            spanning += 1
            for on, at in first_on.items():
                if header and printed.texts[on].rfind(header, 0, at) < 0:
                    problems.append(f"table {number} continues on page {on + 1} without its header")
    return problems, spanning


@pytest.fixture(scope="module")
def printed(written: Written, tmp_path_factory: pytest.TempPathFactory) -> Printed:
    """The fixtures' report printed by Chromium."""
    require_chromium()
    return Printed.of(written.files.html, tmp_path_factory.mktemp("pdf") / "report.pdf")


def long_metrics() -> dict[str, Any]:
    """The fixtures' metrics with 60 scanner models: the subgroup table spans pages."""
    metrics = build_metrics()
    template = metrics["subgroups"]["model"][0]
    models = []
    for index in range(60):
        group = copy.deepcopy(template)
        group["group"] = f"Scanner model {index:02d}"
        if index % 7 == 3:  # a row of several lines
            group.update(too_small=True, reason="fewer than 30 positives " * 4)
        models.append(group)
    metrics["subgroups"]["model"] = models
    return metrics


@pytest.fixture(scope="module")
def printed_long(tmp_path_factory: pytest.TempPathFactory) -> Printed:
    """A report whose subgroup table runs over several pages, written with ``pdf=True``."""
    require_chromium()
    files = write_report(tmp_path_factory.mktemp("long"), long_metrics(), build_context(), pdf=True)
    assert files.pdf is not None and files.pdf.is_file()
    return Printed.read(files.html, files.pdf)


def test_pages_are_a4(printed: Printed) -> None:
    assert len(printed.sizes) >= 4, "print CSS spreads the report over pages"
    for width, height in printed.sizes:
        assert abs(width - A4_POINTS[0]) < 1 and abs(height - A4_POINTS[1]) < 1
    assert printed.pdf.stat().st_size > 20_000


def test_every_figure_whole_on_one_page(printed: Printed) -> None:
    assert len(printed.figures) >= 5, "ROC, PR, reliability, confusion, one thumbnail"
    assert sum(1 for figure in printed.figures if figure.caption) >= 4
    assert figure_problems(printed) == []


def test_no_table_row_cut(printed: Printed) -> None:
    assert len(printed.tables()) >= 10
    problems, _ = table_problems(printed)
    assert problems == []


def test_long_table_breaks_between_rows_under_its_header(printed_long: Printed) -> None:
    problems, spanning = table_problems(printed_long)
    assert spanning >= 1, "the 60-model subgroup table runs over more than one page"
    assert problems == []
    assert figure_problems(printed_long) == []


DETAILS_PAGE = (
    "<!DOCTYPE html><html><head><style>{css}</style></head><body><p>before</p>"
    "<details><summary>Appendix</summary><p>inside the appendix</p></details></body></html>"
)


def test_details_print_open(tmp_path: Path) -> None:
    """A closed ``<details>`` appendix prints its content, not only its summary line."""
    require_chromium()
    page = tmp_path / "page.html"
    page.write_text(DETAILS_PAGE.format(css="p { color: #000; }"), encoding="utf-8")
    pdf = tmp_path / "page.pdf"
    assert write_pdf_with_chromium(page, pdf) is True
    assert "insidetheappendix" in _squash(PdfReader(pdf).pages[0].extract_text())


def test_print_css_alone_prints_details_open(tmp_path: Path) -> None:
    """Printed from a browser (no copy opened by pdf.py), print.css still opens ``<details>``."""
    executable = require_chromium()
    pdfs = {}
    for name, css in (("bare", ""), ("print.css", print_css())):
        page = tmp_path / f"{name}.html"
        page.write_text(DETAILS_PAGE.format(css=css), encoding="utf-8")
        pdfs[name] = tmp_path / f"{name}.pdf"
        flags = ("--no-pdf-header-footer", f"--print-to-pdf={pdfs[name]}")
        command = chromium_command(executable, page, tmp_path / "profile", *flags)
        subprocess.run(command, capture_output=True, timeout=120, check=False)
    texts = {name: _squash(PdfReader(pdf).pages[0].extract_text()) for name, pdf in pdfs.items()}
    assert "insidetheappendix" not in texts["bare"], "control: closed details print closed"
    assert "insidetheappendix" in texts["print.css"]


SPLIT_PAGE = """<!DOCTYPE html><html><head><style>
img {{ display: block; width: 150mm; height: 300mm; }}
td {{ font-size: 36pt; width: 60mm; }}
</style></head><body><p>A figure taller than a page, a row longer than a page.</p>
<img src="data:image/png;base64,{png}">
<table><thead><tr><th>Words</th></tr></thead><tbody><tr><td>{words}</td></tr></tbody></table>
</body></html>"""


def test_the_checks_catch_a_split_figure_and_a_cut_row(tmp_path: Path) -> None:
    """Control: a figure and a row taller than a page cannot print whole; both checks say so."""
    require_chromium()
    buffer = io.BytesIO()
    pixels = np.arange(400 * 300 * 3, dtype=np.uint32).reshape(400, 300, 3) % 251
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    words = " ".join(f"word{index}" for index in range(80))
    page = tmp_path / "split.html"
    page.write_text(SPLIT_PAGE.format(png=png, words=words), encoding="utf-8")
    printed = Printed.of(page, tmp_path / "split.pdf")
    assert len(printed.sizes) >= 3
    assert figure_problems(printed) != []
    problems, _ = table_problems(printed)
    assert problems != []
