"""Every number in the tables of README.md and the docs pages must come from a record under benchmarks/results/.

Reads each Markdown table in README.md and in every page under docs/ (fenced code skipped; the
header and separator rows are labels, not figures), takes every number in its cells as printed
(``9.76``, ``96.9 %``, ``1,266``, ``1.8e-06``, ``+0.94``, ``2.86x``; digits inside names such as
``block1a`` or ``v2-b0`` are not numbers) and looks for it in the results: a recorded value matches
when it prints the same at the page's precision, as itself or, for a percentage or a
top-1/agreement column, times 100 (records keep fractions: 0.9724 is "97.2 %").

The docs pages mostly include the tables the benchmark scripts render from their JSON
(a line ``--8<-- "benchmarks/results/NAME.md"``, replaced by that file in ``mkdocs build`` by
docs/hooks/records.py) instead of retyping them: every such include must name a file under the
results folder, so an included table is a record by construction. A table whose rows do not have its header's
number of cells (a ``|`` inside a cell) would not render as a table: it fails too, in the pages and
in the records they include.

Exits 1 listing each number not found (page, line, row), each include from elsewhere and each
malformed table; 0 when every one is traced.

    python benchmarks/check_figures.py [--readme README.md] [--docs docs] [--results benchmarks/results]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
# A number standing alone: not part of a name (block1a, v2-b0, u8s8, lite0_resolution64, H100).
NUMBER = re.compile(r"(?<![\w.])[-+−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?![\w-])|(?<![\w.])[-+−]?\d[\d,]*(?:\.\d+)?(?=x\b)",
                    re.IGNORECASE)
# Tables that hold settings, not measurements: skipped, each with the reason. Keyed by page (relative to the
# README's folder) and the heading the table sits under.
NOT_MEASURED = {
    ("docs/train.md", "## The schedule is data"):
        "the schedule table is configuration (edgeeff/train/schedule.py, checked against the paper by tests/test_train.py)",
}
# A line `--8<-- "path"` is replaced by that file when the site is built (docs/hooks/records.py, the same pattern).
INCLUDE = re.compile(r"""^\s*--8<--\s+(["']?)([^"'\s]+)\1\s*$""")
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
RECORDED = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)


def table_rows(markdown: str, skip: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line number, row) for every data row of every table outside fenced code, except under the headings in ``skip``."""
    rows, fenced, previous, section = [], False, "", ""
    lines = markdown.splitlines()
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            section = line.strip()
        stripped = line.strip()
        in_table = not fenced and section not in skip and stripped.startswith("|") and stripped.endswith("|")
        is_separator = in_table and set(stripped) <= set("|-: ")
        following = lines[number].strip() if number < len(lines) else ""
        is_header = in_table and not previous.startswith("|") and set(following) <= set("|-: ") and following.startswith("|")
        if in_table and not is_separator and not is_header:
            rows.append((number, stripped))
        previous = stripped if not fenced else ""
    return rows


def numbers_in(row: str) -> list[str]:
    found = []
    for cell in row.strip("|").split("|"):
        cell = cell.replace("`--", "` --")
        for match in NUMBER.finditer(cell):
            text = match.group(0).replace("−", "-").replace(",", "").lstrip("+")
            if text not in ("-", ""):
                found.append(text)
    return found


def decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text and "e" not in text.lower() else 0


def recorded_forms(results: Path) -> set[str]:
    """Every recorded number printed at 0-4 decimals, times 100 at 0-2, and in 1-3 digit scientific form."""
    forms: set[str] = set()
    seen: set[str] = set()
    for path in sorted(results.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in (".json", ".md", ".txt", ".csv"):
            continue
        for token in RECORDED.findall(path.read_text(errors="replace").replace(",", "")):
            if token in seen:
                continue
            seen.add(token)
            value = float(token)
            forms.add(token)
            for places in range(5):
                forms.add(f"{value:.{places}f}")
                forms.add(f"{abs(value):.{places}f}")
            for places in range(3):
                forms.add(f"{value * 100:.{places}f}")
            for places in range(4):
                forms.add(f"{value:.{places}e}")
    return forms


def normalise(text: str) -> str:
    if "e" in text.lower():
        mantissa, exponent = text.lower().split("e")
        return f"{float(mantissa):.{decimals(mantissa)}f}e{int(exponent):+03d}"
    return text


def includes(markdown: str) -> list[tuple[int, str]]:
    """(line number, path) of every include line, `--8<-- "path"`."""
    return [(number, match.group(2)) for number, line in enumerate(markdown.splitlines(), 1)
            if (match := INCLUDE.match(line))]


def malformed_tables(markdown: str) -> list[tuple[int, str]]:
    """(line number, row) of table rows whose cell count differs from their table's separator row."""
    out, lines, fenced, width = [], markdown.splitlines(), False, None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
        if fenced or not (stripped.startswith("|") and stripped.endswith("|")):
            width = None
            continue
        following = lines[number].strip() if number < len(lines) else ""
        if width is None and following.startswith("|") and set(following) <= set("|-: "):
            width = len(CELL_SEPARATOR.split(following.strip("|")))
        if width is not None and len(CELL_SEPARATOR.split(stripped.strip("|"))) != width:
            out.append((number, stripped))
    return out


def pages_of(readme: Path, docs: Path | None) -> list[Path]:
    return [readme] + (sorted(docs.rglob("*.md")) if docs is not None and docs.is_dir() else [])


def name_of(page: Path, root: Path) -> str:
    try:
        return page.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return page.name


class Problem(NamedTuple):
    page: str
    line: int
    kind: str  # "number": no record prints it; "include": not a record; "table": would not render
    what: str
    row: str


def problems(pages: list[Path], results: Path, root: Path) -> tuple[list[Problem], int, int]:
    """Every untraced number, include from elsewhere and malformed table in ``pages``, with the count
    of numbers checked and of tables included from ``results``."""
    forms = recorded_forms(results)
    out, checked, included = [], 0, 0
    for page in pages:
        first = len(out)
        name, text = name_of(page, root), page.read_text()
        skip = frozenset(section for (where, section) in NOT_MEASURED if where == name)
        for number, row in table_rows(text, skip):
            for value in numbers_in(row):
                checked += 1
                if not {normalise(value), normalise(value).lstrip("-")} & forms:
                    out.append(Problem(name, number, "number", value, row))
        for number, row in malformed_tables(text):
            out.append(Problem(name, number, "table", "its cells do not match the header's (a | inside a cell?)", row))
        for number, target in includes(text):
            path = (root / target).resolve()
            if not path.is_relative_to(results.resolve()):
                out.append(Problem(name, number, "include", f"includes {target}, which is not under {results}", target))
            elif not path.is_file():
                out.append(Problem(name, number, "include", f"includes {target}, which does not exist", target))
            else:
                included += 1
                for inner, row in malformed_tables(path.read_text()):
                    out.append(Problem(name, number, "table", f"includes {target}, whose line {inner} has cells that "
                                                              "do not match its header's", row))
        out[first:] = sorted(out[first:], key=lambda problem: problem.line)
    return out, checked, included


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--docs", type=Path, default=None,
                        help="the docs pages' folder (default: docs/ beside the README, where there is one)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    for path in (args.readme, args.results, args.docs):
        if path is not None and not path.exists():
            print(f"check_figures: error: {path} does not exist", file=sys.stderr)
            return 2
    root = args.readme.parent
    pages = pages_of(args.readme, args.docs if args.docs is not None else root / "docs")
    found, checked, included = problems(pages, args.results, root)
    where = args.readme.name if len(pages) == 1 else f"{args.readme.name} and {len(pages) - 1} docs pages"
    if found:
        untraced = sum(problem.kind == "number" for problem in found)
        others = len(found) - untraced
        print(f"check_figures: {untraced} of {checked} numbers in the tables of {where} are in no file under {args.results}"
              + (f"; {others} other problem{'s' * (others != 1)}" if others else "") + ":", file=sys.stderr)
        for problem in found:
            print(f"  {problem.page} line {problem.line}: {problem.what}    in {problem.row[:140]}", file=sys.stderr)
        return 1
    for (page, section), why in NOT_MEASURED.items():
        if any(name_of(p, root) == page for p in pages):
            print(f"check_figures: not checked: the table under {section!r} in {page}: {why}")
    print(f"check_figures: all {checked} numbers in the tables of {where} are in {args.results}; "
          f"{included} tables included from there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
