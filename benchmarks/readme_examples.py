"""Regenerate the console examples in README.md and the docs pages from the tool's real output.

Each example sits between ``<!-- example: NAME -->`` and ``<!-- /example -->`` in README.md or a
page under docs/; this script runs the commands written in the block (``$ edgeeff ...`` lines) in a
scratch folder at 100 columns and rewrites the block with what they printed (stdout and stderr, as
a user sees them). Nothing in those blocks is typed by hand; the commands of one page run in one
scratch folder, in order, so a later example can use what an earlier one wrote.

    python benchmarks/readme_examples.py                      # every page with examples (a few minutes)
    python benchmarks/readme_examples.py docs/devices.md      # only these pages
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
BLOCK = re.compile(r"(<!-- example: (?P<name>[\w-]+) -->\n```console\n)(?P<body>.*?)(```\n<!-- /example -->)", re.S)


def run_example(command: str, scratch: Path) -> str:
    """The command's output as a terminal shows it (both streams, in order), with the scratch path hidden."""
    argv = shlex.split(command)
    if argv[0] != "edgeeff":
        raise SystemExit(f"example {command!r} does not start with edgeeff")
    env = {**os.environ, "COLUMNS": "100", "EDGEEFF_DEVICES": str(scratch / "devices.toml"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "edgeeff.cli", *argv[1:]], cwd=scratch, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
    text = done.stdout.replace(str(scratch), "~/work").rstrip() + "\n"
    return text + (f"[exit {done.returncode}]\n" if done.returncode else "")


def pages_with_examples() -> list[Path]:
    pages = [README] + sorted(DOCS.rglob("*.md"))
    return [page for page in pages if BLOCK.search(page.read_text())]


def regenerate(page: Path) -> str:
    """The page's text with every example block run again, in one scratch folder."""
    with tempfile.TemporaryDirectory(prefix="edgeeff-readme-") as tmp:
        scratch = Path(tmp)

        def fill(match: re.Match) -> str:
            commands = [line[2:] for line in match["body"].splitlines() if line.startswith("$ ")]
            if not commands:
                raise SystemExit(f"{page.name}: example {match['name']} has no '$ edgeeff ...' line")
            body = "".join(f"$ {c}\n" + run_example(c, scratch) for c in commands)
            print(f"{page.name}: example {match['name']}: {len(body.splitlines())} lines", file=sys.stderr)
            return match.group(1) + body + match.group(4)

        return BLOCK.sub(fill, page.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", type=Path, help="Markdown files (default: README.md and every docs page with examples)")
    args = parser.parse_args(argv)
    pages = [page.resolve() for page in args.pages] or pages_with_examples()
    for page in pages:
        if not page.is_file() or not BLOCK.search(page.read_text()):
            raise SystemExit(f"{page}: no <!-- example: NAME --> block")
    from edgeeff import fsio

    for page in pages:
        fsio.write_text(page, regenerate(page))
    return 0


if __name__ == "__main__":
    sys.exit(main())
