"""MkDocs hook: result tables come from their records, not from the page.

A line ``--8<-- "benchmarks/results/NAME.md"`` (on its own, outside fenced code) is replaced by
that file: the Markdown a benchmark script rendered from its JSON record. The record's headings
move below the heading the line sits under (a record's ``# Title`` under a page's ``## Section``
becomes ``### Title``), so the page keeps one outline. Only files under ``benchmarks/results/``
can be included; a missing one stops the build. ``benchmarks/check_figures.py`` reads the same
lines, so what it checks is what the site shows. ``mkdocs serve`` rebuilds when a record changes.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

INCLUDE = re.compile(r"""^\s*--8<--\s+(["']?)([^"'\s]+)\1\s*$""")
HEADING = re.compile(r"^(#{1,6})(\s.*)$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _demoted(text: str, below: int) -> str:
    """``text`` with its headings moved so that its top level sits one under level ``below``."""
    lines, fenced, levels = text.splitlines(), False, []
    for line in lines:
        fenced = fenced != bool(FENCE.match(line))
        if not fenced and (match := HEADING.match(line)):
            levels.append(len(match.group(1)))
    shift = below + 1 - min(levels) if levels else 0
    out, fenced = [], False
    for line in lines:
        fenced = fenced != bool(FENCE.match(line))
        match = None if fenced else HEADING.match(line)
        out.append("#" * min(6, len(match.group(1)) + shift) + match.group(2) if match and shift > 0 else line)
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    root = _root(config)
    results = root / "benchmarks" / "results"
    out, fenced, level = [], False, 0
    for line in markdown.splitlines():
        fenced = fenced != bool(FENCE.match(line))
        heading = None if fenced else HEADING.match(line)
        if heading:
            level = len(heading.group(1))
        include = None if fenced else INCLUDE.match(line)
        if include is None:
            out.append(line)
            continue
        path = (root / include.group(2)).resolve()
        if not path.is_relative_to(results):
            raise PluginError(f"{page.file.src_path}: {include.group(2)} is not a record under benchmarks/results/")
        if not path.is_file():
            raise PluginError(f"{page.file.src_path}: {include.group(2)} does not exist")
        out.append(_demoted(path.read_text().rstrip("\n"), level))
    return "\n".join(out) + "\n"


def on_serve(server, config, builder):
    server.watch(str(_root(config) / "benchmarks" / "results"))
    return server
