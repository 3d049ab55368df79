"""Rows are data; this module only renders them (rich table, JSON, CSV, Markdown)."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from edgeeff import devicekit, fsio


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) or "-"
    return str(value)


def print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]], title: str | None = None, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or redirected, rich assumes 80 columns and folds every cell of a wide table into
        # three lines; a log file reads better with the table at its natural width.
        console = Console(file=console.file, width=max(console.width, 240))
    table = Table(title=title)
    for _, header in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(fmt(row.get(key)) for key, _ in columns))
    console.print(table)


def environment() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": devicekit.cpu_model(),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: str | Path, rows: Sequence[dict], **extra: Any) -> Path:
    payload = {"rows": list(rows), "environment": environment(), **extra}
    return fsio.write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def to_csv(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k) for k in columns})
    return buf.getvalue()


def to_markdown(rows: Sequence[dict], columns: Sequence[tuple[str, str]], formats: dict[str, str] | None = None) -> str:
    """``formats``: a format spec per column key (``".2f"``, ``","``); a missing value prints "-"."""
    formats = formats or {}

    def cell(row: dict, key: str) -> str:
        value = row.get(key)
        return "-" if value is None else format(value, formats[key]) if key in formats else fmt(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row, k) for k, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def new_axes(figsize: tuple[float, float]):
    """A headless matplotlib figure and axes (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, dpi=120)


def save_png(fig, ax, path: str | Path, title: str, legend: bool = True) -> Path:
    """Title, grid, legend, then an atomic write (temp file + rename) of the PNG."""
    import matplotlib.pyplot as plt

    from edgeeff import fsio

    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=10)  # long titles wrap instead of running off the figure
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with fsio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
