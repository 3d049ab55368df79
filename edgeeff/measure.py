"""Latency, initialisation time and peak memory of one artifact, measured in a process of its own.

One measuring function (``edgeeff.devicekit.measure`` and its :func:`time_invocations`) serves
every runtime, here and on remote devices: it times only the runtime's own call on a prepared input
with ``perf_counter_ns``, after a warm-up that lasts both a minimum number of runs and a minimum
time, and keeps going until it has both a minimum number of timed runs and a minimum total time.
``python -m edgeeff.measure ARTIFACT_DIR`` runs it in a fresh process and prints one JSON object, so
init time and peak memory belong to that artifact alone, and a crash costs one row, not the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from edgeeff.devicekit import RunnerError, Schedule, time_invocations  # noqa: F401 (Schedule, time_invocations re-exported)


def measure_artifact(folder: str | Path, threads: int | None = None, batch: int = 1, schedule: Schedule = Schedule(), seed: int = 0,
                     device: str = "cpu", precision: str | None = "f32") -> dict:
    """Load a converted artifact (its folder with ``edgeeff.json``) and measure it in this process."""
    from edgeeff import devicekit
    from edgeeff.artifact import read_metadata
    from edgeeff.errors import EdgeeffError
    from edgeeff.targets.base import get_target, versions

    folder = Path(folder)
    meta = read_metadata(folder)
    spec = get_target(meta["target"])
    try:
        row = devicekit.measure(spec.backend, folder / meta["artifact"], meta["preprocessing"]["resolution"], threads, batch,
                                schedule, seed, device, precision)
    except RunnerError as exc:
        raise EdgeeffError(str(exc)) from None
    return {"target": meta["target"], "variant": meta["variant"], **row, "size_bytes": meta["size_bytes"],
            "versions": versions(*spec.packages), "cpu": devicekit.cpu_model()}


def measure_in_subprocess(folder: str | Path, threads: int | None = None, batch: int = 1, schedule: Schedule = Schedule(),
                          timeout: float = 600, device: str = "cpu", precision: str | None = "f32") -> dict:
    """Run :func:`measure_artifact` in a fresh interpreter; a failure becomes a row with its reason."""
    cmd = [sys.executable, "-m", "edgeeff.measure", str(folder), "--batch", str(batch), "--schedule", json.dumps(asdict(schedule)),
           "--device", device, "--precision", precision or "default"]
    if threads:
        cmd += ["--threads", str(threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"error": (lines[-1] if lines else f"exit {done.returncode}")[:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def interleaved_rounds(groups: list[list[str | Path]], rounds: int, threads: int | None, schedule: Schedule = Schedule(),
                       say: Callable[[str], None] = lambda text: print(text, flush=True)) -> list[list[list[float]]]:
    """Median milliseconds of each artifact in ``groups``, one fresh process each, in ``rounds``
    interleaved rounds: artifacts compared with each other share the machine's state in every round,
    so per-round ratios are fairer than ratios of separate runs on a noisy host. A failed
    measurement is left out of its artifact's list."""
    times = [[[] for _ in group] for group in groups]
    for number in range(rounds):
        say(f"round {number + 1}/{rounds}")
        for group, slots in zip(groups, times):
            for path, slot in zip(group, slots):
                ms = measure_in_subprocess(path, threads, 1, schedule).get("median_ms")
                if ms:
                    slot.append(ms)
    return times


def _main(argv: list[str]) -> int:
    import argparse

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser(prog="python -m edgeeff.measure")
    parser.add_argument("folder")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--schedule", default="{}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="f32")
    args = parser.parse_args(argv)
    from edgeeff.errors import EdgeeffError

    try:
        row = measure_artifact(args.folder, args.threads, args.batch, Schedule(**json.loads(args.schedule)),
                               device=args.device, precision=None if args.precision == "default" else args.precision)
    except EdgeeffError as exc:
        print(f"edgeeff: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
