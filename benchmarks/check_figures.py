"""Every number in README.md's tables must come from a record under benchmarks/results/.

Reads each Markdown table in README.md (fenced code skipped; the header and separator rows are
labels, not figures), takes every number in its cells as printed (``9.76``, ``96.9 %``, ``1,266``,
``1.8e-06``, ``+0.94``, ``2.86x``; digits inside names such as ``block1a`` or ``v2-b0`` are not
numbers) and looks for it in the results: a recorded value matches when it prints the same at the
README's precision, as itself or, for a percentage or a top-1/agreement column, times 100 (records
keep fractions: 0.9724 is "97.2 %"). Exits 1 listing each number not found, with its table row;
0 when every one is traced.

    python benchmarks/check_figures.py [--readme README.md] [--results benchmarks/results]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A number standing alone: not part of a name (block1a, v2-b0, u8s8, lite0_resolution64, H100).
NUMBER = re.compile(r"(?<![\w.])[-+−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?![\w-])|(?<![\w.])[-+−]?\d[\d,]*(?:\.\d+)?(?=x\b)",
                    re.IGNORECASE)
# Tables that hold settings, not measurements: skipped, each with the reason.
NOT_MEASURED = {
    "## Train (EfficientNetV2 progressive learning)":
        "the schedule table is configuration (edgeeff/schedule.py, checked against the paper by tests/test_train.py)",
}
RECORDED = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)


def table_rows(markdown: str) -> list[tuple[int, str]]:
    """(line number, row) for every data row of every table outside fenced code."""
    rows, fenced, previous, section = [], False, "", ""
    lines = markdown.splitlines()
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            section = line.strip()
        stripped = line.strip()
        in_table = not fenced and section not in NOT_MEASURED and stripped.startswith("|") and stripped.endswith("|")
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


def missing(readme: Path, results: Path) -> list[tuple[int, str, str]]:
    forms = recorded_forms(results)
    out = []
    for number, row in table_rows(readme.read_text()):
        for text in numbers_in(row):
            candidates = {normalise(text), normalise(text).lstrip("-")}
            if not candidates & forms:
                out.append((number, text, row))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    for path in (args.readme, args.results):
        if not path.exists():
            print(f"check_figures: error: {path} does not exist", file=sys.stderr)
            return 2
    gaps = missing(args.readme, args.results)
    checked = sum(len(numbers_in(row)) for _, row in table_rows(args.readme.read_text()))
    if gaps:
        print(f"check_figures: {len(gaps)} of {checked} numbers in {args.readme.name}'s tables are in no file under {args.results}:",
              file=sys.stderr)
        for number, text, row in gaps:
            print(f"  line {number}: {text}    in {row[:140]}", file=sys.stderr)
        return 1
    for section, why in NOT_MEASURED.items():
        print(f"check_figures: not checked: the table under {section!r}: {why}")
    print(f"check_figures: all {checked} numbers in {args.readme.name}'s tables are in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
