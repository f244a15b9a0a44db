"""Render a :class:`~usdcm.report.document.Document` as Markdown (GitHub-flavoured).

Owns the Markdown text and how it links figures (relative paths to PNG files beside it);
never writes a file. Every string from the document is escaped, HTML included, so a
Markdown viewer shows it as text and never runs it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

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

_SPECIAL = re.compile(r"([\\`*_\[\]|#!~])")
_LEADING = re.compile(r"^(\s*[-+]?|\s*\d+)([-+.)])(?=\s|$)")


def escape_markdown(text: str) -> str:
    """``text`` as literal Markdown on one line: HTML and Markdown syntax escaped.

    >>> escape_markdown("<script>a_b*c</script>")
    '&lt;script&gt;a\\\\_b\\\\*c&lt;/script&gt;'
    >>> escape_markdown("- not a list\\nline 2")
    '\\\\- not a list line 2'
    """
    text = " ".join(text.split("\n"))
    text = _SPECIAL.sub(r"\\\1", html.escape(text, quote=False))
    return _LEADING.sub(r"\1\\\2", text)


def _image(ref: FigureRef, paths: Mapping[str, str]) -> str:
    path = paths.get(ref.name)
    if path is None:
        return escape_markdown(f"figure {ref.name} not available")
    return f"![{escape_markdown(ref.caption)}]({path})"


def _cell(cell: Cell, paths: Mapping[str, str]) -> str:
    if isinstance(cell, FigureRef):
        return _image(cell, paths)
    return escape_markdown(cell) or " "


def _table(table: Table, paths: Mapping[str, str]) -> str:
    rule = ["---:" if table.alignment(i) == "r" else "---" for i in range(len(table.header))]
    lines = [
        "| " + " | ".join(escape_markdown(text) for text in table.header) + " |",
        "| " + " | ".join(rule) + " |",
    ]
    lines.extend("| " + " | ".join(_cell(cell, paths) for cell in row) + " |" for row in table.rows)
    return "\n".join(lines)


def _fence(lines: tuple[str, ...]) -> str:
    longest = max((len(run) for run in re.findall(r"`+", "\n".join(lines))), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([f"{fence}sh", *lines, fence])


def _block(block: Block, paths: Mapping[str, str]) -> str:
    if isinstance(block, Paragraph):
        text = escape_markdown(block.text)
        if block.style == "banner":
            return f"> **{text}**"
        if block.style == "warning":
            return f"> **Warning:** {text}"
        if block.style == "note":
            return f"> {text}"
        return text
    if isinstance(block, Subheading):
        return f"### {escape_markdown(block.text)}"
    if isinstance(block, Bullets):
        return "\n".join(f"- {escape_markdown(item)}" for item in block.items)
    if isinstance(block, Code):
        return _fence(block.lines)
    if isinstance(block, Table):
        return _table(block, paths)
    return f"{_image(block, paths)}\n\n*{escape_markdown(block.caption)}*"


def _section(section: Section, paths: Mapping[str, str]) -> str:
    parts = [f"## {escape_markdown(section.title)}", f"*{escape_markdown(section.checklist)}*"]
    parts.extend(_block(block, paths) for block in section.blocks)
    return "\n\n".join(parts)


def render_markdown(document: Document, figure_paths: Mapping[str, str]) -> str:
    """The whole report as Markdown, figures linked by relative path.

    Parameters
    ----------
    document : Document
        From :func:`~usdcm.report.document.build_document`.
    figure_paths : mapping of str to str
        ``{figure name: path relative to the Markdown file}``, e.g. ``figures/roc.png``.

    Returns
    -------
    str
        Markdown text ending in a newline.

    Examples
    --------
    >>> from usdcm.report.document import build_document
    >>> text = render_markdown(build_document({}, figures={}), {})
    >>> text.splitlines()[0], "## Appendix: configuration, versions and hashes" in text
    ('# Clinical validation report', True)
    """
    parts = [f"# {escape_markdown(document.title)}", escape_markdown(document.subtitle)]
    parts.extend(_section(section, figure_paths) for section in document.sections)
    parts.append(f"---\n\n{escape_markdown(document.footer)}")
    return "\n\n".join(parts) + "\n"
