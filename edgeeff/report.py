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

from edgeeff import fsio


# One number format for the terminal, a pipe, Markdown and plots: shares as percentages with one


from edgeeff.kit import probe as kit_probe
# decimal, milliseconds and ratios with two, and an agreement always beside its count of images.
# A column's kind is known by its key, so every command and benchmark renders alike.
PERCENT_KEYS = frozenset({
    "agreement", "top1", "top5", "top1_fp32", "reference_top1", "top1_agreement", "fp32_top1", "quantized_top1",
    "top1_keras", "top1_artifact", "probability", "val_accuracy", "accuracy", "speedup_kept", "local_agreement", "params_vs_published",
    "map", "ap50", "ap75", "reference_map", "boxes_found_again", "class_ap", "reference_class_ap", "boxes_matched", "map_vs_reference",
})
RATIO_KEYS = frozenset({"speedup_vs_fp32", "speedup", "speedup_plain_int8", "speedup_budgeted", "ratio"})
COSINE_KEYS = frozenset({"cosine", "mean_cosine"})
COUNT_KEYS = ("images", "validation_images")  # where a row keeps the n its agreement is out of
RANDOM_WEIGHTS = "random weights"


def percent(value: float) -> str:
    text = f"{value * 100:.1f}"
    return ("0.0" if text == "-0.0" else text) + "%"  # a tiny negative rounds to zero, not to "-0.0"


def weights_text(label: str | None) -> str:
    """What a row says about its weights: a card, a file, or loudly ``random weights``."""
    return RANDOM_WEIGHTS if label in (None, "", "none", "random") else str(label)


def fmt(value: Any, key: str | None = None, row: dict | None = None) -> str:
    """A cell as text; ``key`` (the column) chooses the number format, ``row`` supplies the n of an agreement."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "weights":
        return weights_text(value)
    if isinstance(value, (list, tuple)) and key and ("_ci95" in key) and len(value) == 2:
        lo, hi = value
        return f"{percent(lo)} to {percent(hi)}" if key.startswith("top1") else f"{lo:+.2f} to {hi:+.2f}"
    if isinstance(value, (int, float)) and key:
        if key in PERCENT_KEYS or key.endswith("_agreement"):
            text = percent(value)
            own = key[: -len("agreement")] + "images" if key.endswith("_agreement") else None  # held_out_agreement: held_out_images
            n = row.get(own) if row and own and isinstance(row.get(own), int) else next(
                (row[k] for k in COUNT_KEYS if row and isinstance(row.get(k), int)), None)
            if "agreement" in key and n:
                text += f" ({round(value * n)}/{n})"
            return text
        if key.endswith("_ms") or key in RATIO_KEYS or key.endswith("_mb") or key.endswith("_points"):
            return f"{value:,.2f}"
        if key == "seconds" or key.endswith("_seconds"):
            return f"{value:,.1f}"
        if key in COSINE_KEYS or key.endswith("_cosine") or key.endswith("_iou_mean"):
            return f"{value:.4f}"
        if key in ("mean_kl", "max_rel_diff"):
            return f"{value:.2e}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return str(value)


_STDOUT_IS_REPORT = False  # set when a report goes to standard output (``--json -``): tables then go to stderr


def report_to_stdout() -> None:
    """Keep standard output for the machine-readable report: tables and result lines move to stderr."""
    global _STDOUT_IS_REPORT
    _STDOUT_IS_REPORT = True
    fsio.claim_stdout()


def echo(text: str) -> None:
    """A result line (``artifact: ...``): on stdout, unless stdout carries a report."""
    import click

    click.echo(text, err=_STDOUT_IS_REPORT)


def print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]], title: str | None = None, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=_STDOUT_IS_REPORT)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or redirected, rich assumes 80 columns and folds every cell of a wide table into
        # three lines; a log file reads better with the table at its natural width.
        console = Console(file=console.file, width=max(console.width, 240))
    cells = [[fmt(row.get(key), key, row) for key, _ in columns] for row in rows]
    natural = sum(max([len(header)] + [len(line[i]) for line in cells]) + 3 for i, (_, header) in enumerate(columns)) + 1
    if len(rows) == 1 and natural > console.width:
        # One result too wide for the terminal reads, and fits, as a field/value list.
        cells = [[header, value] for (_, header), value in zip(columns, cells[0])]
        columns = [("field", "field"), ("value", "value")]
    table = Table(title=title)
    for i, (_, header) in enumerate(columns):
        # A column is never narrower than its longest word (header or cell, up to a path-like 24
        # characters): at 100 columns rich folds words mid-way ("agreemen"/"t") otherwise.
        words = header.split() + [word for line in cells for word in line[i].split()]
        table.add_column(header, overflow="fold", min_width=min(24, max((len(w) for w in words), default=1)))
    for line in cells:
        table.add_row(*line)
    console.print(table)


def environment() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": kit_probe.cpu_model(),
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
    for row in rows:  # nested values (runtime versions) as JSON, not a Python repr
        writer.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in ((k, row.get(k)) for k in columns)})
    return buf.getvalue()


def to_markdown(rows: Sequence[dict], columns: Sequence[tuple[str, str]], formats: dict[str, str] | None = None) -> str:
    """``formats``: a format spec per column key (``".2f"``, ``","``); a missing value prints "-"."""
    formats = formats or {}

    def cell(row: dict, key: str) -> str:
        value = row.get(key)
        return "-" if value is None else format(value, formats[key]) if key in formats else fmt(value, key, row)

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
