"""Render a :class:`~usdcm.report.document.Document` as one self-contained HTML page.

Owns the HTML, its inline CSS (screen, plus ``print.css`` when the package holds one), the
folding of the appendix into ``<details>`` and the embedding of figures as
``data:image/png;base64`` URIs; never fetches anything (no external CSS, JS, fonts or
images: a Content-Security-Policy forbids them) and never writes a file. Every string from
the document passes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from importlib import resources

from usdcm.report.document import (
    Block,
    Bullets,
    Cell,
    Code,
    Document,
    FigureRef,
    Paragraph,
    Section,
    Subheading,
    Table,
)

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: #1a1a1a;
  line-height: 1.45; max-width: 62rem; margin: 1.5rem auto; padding: 0 1rem; font-size: 15px; }
header h1 { margin-bottom: .2rem; }
header .subtitle { color: #444; margin-top: 0; }
h2 { border-bottom: 2px solid #2a5d9f; padding-bottom: .15rem; margin-top: 2rem; }
h3 { margin: 1.1rem 0 .4rem; font-size: 1.02rem; }
.checklist { color: #555; font-size: .82rem; margin: -.3rem 0 .8rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #c8c8c8; padding: .25rem .55rem; text-align: left;
  vertical-align: top; }
th { background: #eef2f7; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
td { overflow-wrap: anywhere; }
.summary { border: 2px solid #2a5d9f; border-radius: 6px; padding: .2rem 1rem .6rem;
  background: #f5f8fc; }
.summary table td:first-child { font-weight: 600; }
p.banner { background: #b00020; color: #fff; font-weight: 700; padding: .55rem 1rem;
  border-radius: 4px; letter-spacing: .02em; }
p.warning { border-left: 4px solid #b36b00; background: #fff6e5; padding: .4rem .8rem; }
p.note { border-left: 4px solid #8a8a8a; background: #f4f4f4; padding: .4rem .8rem; }
figure { margin: 1rem 0; }
figure img { display: block; width: 100%; max-width: 600px; height: auto;
  border: 1px solid #ddd; }
figcaption { font-size: .85rem; color: #444; margin-top: .3rem; }
img.thumb { width: 96px; height: auto; border: 1px solid #ddd; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: .6rem; white-space: pre-wrap;
  overflow-wrap: anywhere; font-size: .85rem; }
nav.toc ol { columns: 2; font-size: .9rem; }
nav.toc a { color: #2a5d9f; }
footer { margin-top: 2rem; border-top: 1px solid #ccc; color: #555; font-size: .85rem; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 10pt; }
  nav.toc { display: none; }
  a { color: inherit; text-decoration: none; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  table, tr, figure, pre, p.banner, .summary { break-inside: avoid; page-break-inside: avoid; }
  section.section-results, section.section-calibration, section.section-failures,
  section.section-limitations { break-before: page; page-break-before: always; }
  figure img { max-width: 14cm; }
}
"""

FOLDED_SECTIONS = frozenset({"reproducibility"})
"""Sections the HTML folds into a ``<details>`` element (the appendix)."""

PRINT_CSS = "print.css"
"""The print stylesheet beside this module, inlined when present (the PDF's layout)."""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""The page may load nothing: images only from ``data:`` URIs, styles only inline."""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def data_uri(png: bytes) -> str:
    """``png`` as a ``data:image/png;base64,...`` URI.

    >>> data_uri(b"\\x89PNG")
    'data:image/png;base64,iVBORw=='
    """
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image(ref: FigureRef, figures: Mapping[str, bytes]) -> str:
    png = figures.get(ref.name)
    if png is None:
        return f"<span>{_e('figure ' + ref.name + ' not available')}</span>"
    css = ' class="thumb"' if ref.thumbnail else ""
    return f'<img{css} src="{data_uri(png)}" alt="{_e(ref.caption)}">'


def _cell(cell: Cell, figures: Mapping[str, bytes]) -> str:
    return _image(cell, figures) if isinstance(cell, FigureRef) else _e(cell)


def _table(table: Table, figures: Mapping[str, bytes]) -> str:
    def css(column: int) -> str:
        return ' class="r"' if table.alignment(column) == "r" else ""

    head = "".join(
        f'<th scope="col"{css(index)}>{_e(text)}</th>' for index, text in enumerate(table.header)
    )
    body = "\n".join(
        "<tr>"
        + "".join(f"<td{css(index)}>{_cell(cell, figures)}</td>" for index, cell in enumerate(row))
        + "</tr>"
        for row in table.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _block(block: Block, figures: Mapping[str, bytes]) -> str:
    if isinstance(block, Paragraph):
        css = "" if block.style == "text" else f' class="{block.style}"'
        return f"<p{css}>{_e(block.text)}</p>"
    if isinstance(block, Subheading):
        return f"<h3>{_e(block.text)}</h3>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{_e(item)}</li>" for item in block.items) + "\n</ul>"
    if isinstance(block, Code):
        return "<pre><code>" + _e("\n".join(block.lines)) + "</code></pre>"
    if isinstance(block, Table):
        return _table(block, figures)
    return f"<figure>{_image(block, figures)}<figcaption>{_e(block.caption)}</figcaption></figure>"


def print_css() -> str:
    """The text of ``usdcm/report/print.css``, or ``""`` when the package has none."""
    try:
        resource = resources.files("usdcm.report").joinpath(PRINT_CSS)
        return resource.read_text(encoding="utf-8") if resource.is_file() else ""
    except (OSError, ModuleNotFoundError):
        return ""


def _section(section: Section, figures: Mapping[str, bytes]) -> str:
    key = _e(section.key)
    inner = "\n".join(_block(block, figures) for block in section.blocks)
    if section.key == "summary":
        inner = f'<div class="summary">\n{inner}\n</div>'
    if section.key in FOLDED_SECTIONS:
        inner = (
            f"<details>\n<summary>Show the {_e(section.title.lower())}</summary>\n"
            f"{inner}\n</details>"
        )
    return (
        f'<section id="{key}" class="section-{key}">\n'
        f"<h2>{_e(section.title)}</h2>\n"
        f'<p class="checklist">{_e(section.checklist)}</p>\n{inner}\n</section>'
    )


def render_html(document: Document) -> str:
    """The whole report as one HTML page, figures embedded, readable offline.

    Parameters
    ----------
    document : Document
        From :func:`~usdcm.report.document.build_document`.

    Returns
    -------
    str
        A complete HTML5 document; it references nothing outside itself.

    Examples
    --------
    >>> from usdcm.report.document import build_document
    >>> page = render_html(build_document({}, figures={}))
    >>> page.startswith("<!DOCTYPE html>"), "<h2>Limitations</h2>" in page
    (True, True)
    """
    toc = "\n".join(
        f'<li><a href="#{_e(section.key)}">{_e(section.title)}</a></li>'
        for section in document.sections
    )
    sections = "\n".join(_section(section, document.figures) for section in document.sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(document.title)}</title>
<style>{CSS}{print_css()}</style>
</head>
<body>
<header>
<h1>{_e(document.title)}</h1>
<p class="subtitle">{_e(document.subtitle)}</p>
</header>
<nav class="toc" aria-label="Contents"><ol>
{toc}
</ol></nav>
<main>
{sections}
</main>
<footer><p>{_e(document.footer)}</p></footer>
</body>
</html>
"""
