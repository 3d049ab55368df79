"""Latency, initialisation time and peak memory of one artifact, measured in a process of its own.

One measuring function (:func:`time_invocations`) serves every runtime: it times only the
runtime's own call on a prepared input with ``perf_counter_ns``, after a warm-up that lasts both
a minimum number of runs and a minimum time, and keeps going until it has both a minimum number
of timed runs and a minimum total time. ``python -m edgeeff.measure ARTIFACT_DIR`` runs it in a
fresh process and prints one JSON object, so init time and peak memory belong to that artifact
alone, and a crash costs one row, not the run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Schedule:
    warmup_runs: int = 10
    warmup_seconds: float = 1.0
    min_runs: int = 50
    min_seconds: float = 3.0
    max_runs: int = 100_000


def time_invocations(invoke: Callable[[], Any], schedule: Schedule = Schedule()) -> dict:
    """Warm up, then time ``invoke()`` until both minimums hold; statistics in milliseconds."""
    start = time.perf_counter()
    runs = 0
    while runs < schedule.warmup_runs or time.perf_counter() - start < schedule.warmup_seconds:
        invoke()
        runs += 1
    samples: list[int] = []
    total = 0
    while (len(samples) < schedule.min_runs or total < schedule.min_seconds * 1e9) and len(samples) < schedule.max_runs:
        t0 = time.perf_counter_ns()
        invoke()
        elapsed = time.perf_counter_ns() - t0
        samples.append(elapsed)
        total += elapsed
    ms = np.asarray(samples, dtype=np.float64) / 1e6
    return {
        "warmup_runs": runs,
        "runs": len(samples),
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure_artifact(folder: str | Path, threads: int | None = None, batch: int = 1, schedule: Schedule = Schedule(), seed: int = 0,
                     device: str = "cpu", precision: str | None = "f32") -> dict:
    """Load a converted artifact (its folder with ``edgeeff.json``) and measure it in this process."""
    from edgeeff.report import cpu_model
    from edgeeff.targets.base import get_target, versions

    folder = Path(folder)
    meta = json.loads((folder / "edgeeff.json").read_text())
    spec = get_target(meta["target"])
    module = spec.module()
    res = meta["preprocessing"]["resolution"]
    rss_before = peak_rss_mb()
    t0 = time.perf_counter_ns()
    runner = module.load(folder / meta["artifact"], spec, threads=threads, device=device, precision=precision)
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    pixels = np.random.default_rng(seed).uniform(0, 255, size=(batch, res, res, 3)).astype(np.float32)
    prepared = runner.prepare(pixels)  # outside the timed region
    t0 = time.perf_counter_ns()
    runner.invoke(prepared)
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    stats = time_invocations(lambda: runner.invoke(prepared), schedule)
    return {
        "target": meta["target"],
        "variant": meta["variant"],
        "batch": batch,
        "device": device,
        "threads": threads or os.cpu_count(),
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        **stats,
        "throughput_ips": batch * 1000.0 / stats["median_ms"],
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_load_mb": rss_before,
        "size_bytes": meta["size_bytes"],
        "runner": runner.describe(),
        "versions": versions(*spec.packages),
        "cpu": cpu_model(),
    }


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
