"""Regenerate the console examples in README.md from the tool's real output.

Each example sits between ``<!-- example: NAME -->`` and ``<!-- /example -->`` in README.md; this
script runs the command written on the block's first line (``$ edgeeff ...``) in a scratch folder
at 100 columns and rewrites the block with what it printed (stdout and stderr, as a user sees
them). Nothing in those blocks is typed by hand; the commands of one README run in one scratch
folder, in order, so a later example can use what an earlier one wrote.

    python benchmarks/readme_examples.py            # rewrite README.md (about 2 minutes)
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
BLOCK = re.compile(r"(<!-- example: (?P<name>[\w-]+) -->\n```console\n)(?P<body>.*?)(```\n<!-- /example -->)", re.S)


def run_example(command: str, scratch: Path) -> str:
    """The command's output as a terminal shows it (both streams, in order), with the scratch path hidden."""
    argv = shlex.split(command)
    if argv[0] != "edgeeff":
        raise SystemExit(f"README example {command!r} does not start with edgeeff")
    env = {**os.environ, "COLUMNS": "100", "EDGEEFF_DEVICES": str(scratch / "devices.toml"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "edgeeff.cli", *argv[1:]], cwd=scratch, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
    text = done.stdout.replace(str(scratch), "~/work").rstrip() + "\n"
    return text + (f"[exit {done.returncode}]\n" if done.returncode else "")


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    text = README.read_text()
    with tempfile.TemporaryDirectory(prefix="edgeeff-readme-") as tmp:
        scratch = Path(tmp)

        def fill(match: re.Match) -> str:
            commands = [line[2:] for line in match["body"].splitlines() if line.startswith("$ ")]
            if not commands:
                raise SystemExit(f"README example {match['name']} has no '$ edgeeff ...' line")
            body = "".join(f"$ {c}\n" + run_example(c, scratch) for c in commands)
            print(f"example {match['name']}: {len(body.splitlines())} lines", file=sys.stderr)
            return match.group(1) + body + match.group(4)

        new = BLOCK.sub(fill, text)
    from edgeeff import fsio

    fsio.write_text(README, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
