"""The clinical validation report: metrics plus context in, ``report.html`` and ``report.md`` out.

Owns how results are presented (sections tied to TRIPOD+AI, CLAIM 2024 and STARD 2015 items,
figures, automatically flagged limitations); never computes a metric and never writes
``metrics.json``. The HTML is one offline file that prints cleanly to PDF; Markdown links
its figures as PNG files beside it.

Examples
--------
>>> from usdcm.report import ReportContext, flag_limitations
>>> context = ReportContext(reference_standard="Histopathology")
>>> [flag.code for flag in flag_limitations({"threshold": {"exploratory": True}}, context)]
['exploratory_threshold']
"""

from usdcm.report.checklist import SECTIONS, SectionSpec
from usdcm.report.context import ReportContext, evaluation_fields
from usdcm.report.document import Document, build_document
from usdcm.report.figures import FIGURE_NAMES, render_figures
from usdcm.report.limitations import Limitation, flag_limitations
from usdcm.report.pdf import write_pdf_with_chromium
from usdcm.report.to_html import render_html
from usdcm.report.to_markdown import render_markdown
from usdcm.report.write import ReportFiles, write_report

__all__ = [
    "FIGURE_NAMES",
    "SECTIONS",
    "Document",
    "Limitation",
    "ReportContext",
    "ReportFiles",
    "SectionSpec",
    "build_document",
    "evaluation_fields",
    "flag_limitations",
    "render_figures",
    "render_html",
    "render_markdown",
    "write_pdf_with_chromium",
    "write_report",
]
