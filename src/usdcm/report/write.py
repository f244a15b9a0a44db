"""Write the report: ``report.html``, ``report.md`` and ``figures/*.png`` under one folder.

Owns the file names and the atomic writes; never writes ``metrics.json`` (the caller does)
and never computes a metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usdcm.atomic import atomic_write_bytes, atomic_write_text
from usdcm.report.context import ReportContext
from usdcm.report.document import build_document
from usdcm.report.pdf import write_pdf_with_chromium
from usdcm.report.to_html import render_html
from usdcm.report.to_markdown import render_markdown

HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"
PDF_NAME = "report.pdf"
FIGURES_DIR = "figures"


@dataclass(frozen=True)
class ReportFiles:
    """The files :func:`write_report` wrote.

    Parameters
    ----------
    html : Path
        The self-contained ``report.html``.
    markdown : Path
        ``report.md``.
    figures : dict of str to Path
        Every PNG the Markdown links, by figure name (``roc``, ``pr``, ``reliability``,
        ``confusion``, ``decision``, ``flow``, then failure thumbnails).
    pdf : Path or None
        ``report.pdf`` when it was asked for and Chromium printed it.
    """

    html: Path
    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)
    pdf: Path | None = None


def write_report(
    out_dir: Path,
    metrics: Mapping[str, Any],
    context: ReportContext | None = None,
    *,
    pdf: bool = False,
) -> ReportFiles:
    """Render the clinical validation report of ``metrics`` into ``out_dir``.

    Writes ``report.html`` (one file, figures embedded as data URIs, no external reference),
    ``report.md`` and the PNGs it links under ``figures/``, each atomically.

    Parameters
    ----------
    out_dir : Path
        The folder; created if missing. Files already there with other names are kept.
    metrics : mapping
        The dict of :func:`usdcm.metrics.summarize`.
    context : ReportContext, optional
        Intended use, data, split, model, commands, thumbnails, reference standard, flow
        counts, de-identification and study years.
    pdf : bool
        Also print ``report.pdf`` with :func:`~usdcm.report.pdf.write_pdf_with_chromium`;
        skipped silently (``ReportFiles.pdf is None``) when Chromium is missing or fails.

    Returns
    -------
    ReportFiles
        The paths written.
    """
    document = build_document(metrics, context or ReportContext())
    figures: dict[str, Path] = {}
    for name, png in document.figures.items():
        path = out_dir / FIGURES_DIR / f"{name}.png"
        atomic_write_bytes(path, png)
        figures[name] = path
    relative = {name: f"{FIGURES_DIR}/{path.name}" for name, path in figures.items()}
    markdown = out_dir / MARKDOWN_NAME
    atomic_write_text(markdown, render_markdown(document, relative))
    html = out_dir / HTML_NAME
    atomic_write_text(html, render_html(document))
    pdf_path = out_dir / PDF_NAME
    printed = pdf and write_pdf_with_chromium(html, pdf_path)
    return ReportFiles(
        html=html, markdown=markdown, figures=figures, pdf=pdf_path if printed else None
    )
