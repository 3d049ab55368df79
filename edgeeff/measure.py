"""Latency, initialisation time and peak memory of one artifact, measured in a process of its own.

One measuring function (``edgeeff.kit.core.measure`` and its :func:`time_invocations`) serves
every runtime, here and on remote devices: it times only the runtime's own call on a prepared input
with ``perf_counter_ns``, after a warm-up that lasts both a minimum number of runs and a minimum
time, and keeps going until it has both a minimum number of timed runs and a minimum total time.
``python -m edgeeff.measure ARTIFACT_DIR`` runs it in a fresh process and prints one JSON object, so
init time and peak memory belong to that artifact alone, and a crash costs one row, not the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from edgeeff.kit.core import RunnerError, Schedule, time_invocations  # noqa: F401 (Schedule, time_invocations re-exported)


def measure_artifact(folder: str | Path, threads: int | None = None, batch: int = 1, schedule: Schedule = Schedule(), seed: int = 0,
                     device: str = "cpu", precision: str | None = "f32") -> dict:
    """Load a converted artifact (its folder with ``edgeeff.json``) and measure it in this process."""
    from edgeeff.kit import core as kit_core
    from edgeeff.kit import probe as kit_probe
    from edgeeff.artifact import read_metadata
    from edgeeff.errors import EdgeeffError
    from edgeeff.targets.base import get_target, versions

    folder = Path(folder)
    meta = read_metadata(folder)
    spec = get_target(meta["target"])
    try:
        row = kit_core.measure(spec.module_name, folder / meta["artifact"], meta["preprocessing"]["resolution"], threads, batch,
                                schedule, seed, device, precision, adapt=meta.get("input_adapter"))
    except RunnerError as exc:
        raise EdgeeffError(str(exc)) from None
    return {"target": meta["target"], "variant": meta.get("variant"), **row, "size_bytes": meta["size_bytes"],
            "versions": versions(*spec.packages), "cpu": kit_probe.cpu_model()}


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


def _prepared_invoke(folder: Path, threads: int | None):
    """The artifact's runner, loaded, and a call of it on a prepared random input."""
    from edgeeff.kit import core as kit_core
    from edgeeff.artifact import read_metadata
    from edgeeff.errors import EdgeeffError
    from edgeeff.targets.base import get_target

    meta = read_metadata(folder)
    try:
        runner = kit_core.load_runner(get_target(meta["target"]).module_name, folder / meta["artifact"], threads,
                                       adapt=meta.get("input_adapter"))
    except RunnerError as exc:
        raise EdgeeffError(str(exc)) from None
    prepared = runner.prepare(kit_core.random_pixels(meta["preprocessing"]["resolution"]))
    return lambda: runner.invoke(prepared)


class _Worker:
    """One side of :func:`side_by_side`: ``python -m edgeeff.measure FOLDER --serve``, asked for
    blocks of timed runs on its stdin, answering one JSON line each on its stdout (the worker
    points its own fd 1 at stderr, so nothing a runtime prints can shift the replies)."""

    def __init__(self, folder: str | Path, threads: int | None, schedule: Schedule, timeout: float) -> None:
        import selectors
        import tempfile

        self.folder, self.timeout = Path(folder), timeout
        self.errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty runtime cannot block on a full pipe
        cmd = [sys.executable, "-m", "edgeeff.measure", str(folder), "--serve", "--schedule", json.dumps(asdict(schedule))]
        try:
            self.process = subprocess.Popen(cmd + (["--threads", str(threads)] if threads else []), stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=self.errors, text=True, bufsize=1)
        except OSError:
            self.errors.close()
            raise
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        try:
            if self._reply() != "ready":
                raise RuntimeError(f"{self.folder.name}: the worker did not start the protocol")
        except RuntimeError:
            self.close()
            raise

    def _reply(self) -> str:
        line = self.process.stdout.readline() if self.selector.select(self.timeout) else None
        if line:
            return line.strip()
        raise RuntimeError(f"{self.folder.name}: {self.reason(line is None)}")

    def reason(self, timed_out: bool = False) -> str:
        """Why the worker stopped answering: its last line on stderr."""
        if timed_out:
            return f"no answer within {self.timeout:.0f} s"
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        self.errors.seek(0)
        lines = [text for text in self.errors.read().decode(errors="replace").splitlines() if text.strip()]
        return (lines[-1] if lines else f"exit {self.process.returncode}")[:300]

    def timings(self, runs: int) -> list[int]:
        try:
            self.process.stdin.write(f"{runs}\n")
        except OSError:
            raise RuntimeError(f"{self.folder.name}: {self.reason()}") from None
        timings = json.loads(self._reply())
        if not isinstance(timings, list) or len(timings) < runs:
            raise RuntimeError(f"{self.folder.name}: the worker answered {str(timings)[:80]!r}, not {runs} timings or more")
        return timings

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.selector.close()
        self.process.stdout.close()
        self.errors.close()


def side_by_side(folders: list[str | Path], threads: int | None = None, schedule: Schedule = Schedule(), block: int = 16,
                 timeout: float = 600) -> list[dict]:
    """Median latency of several artifacts measured in alternating blocks of ``block`` runs (or more:
    a block's timed part lasts at least as long as its settling), each in a process of its own
    (:class:`_Worker`; after each switch it runs untimed for ``kit_core.SETTLE_SECONDS``), the order
    reversed every cycle, until each has the schedule's minimum runs and time (at least one block
    each). For choosing between artifacts whose latencies differ by a few percent: on a shared
    2-core host, fresh processes a minute apart differ by 20-30 % for the same artifact (measured,
    Lite0 onnx int8: medians 5.3-7.2 ms). A failure (a worker that cannot load its artifact, dies,
    or gives no answer within ``timeout`` seconds) becomes one row per artifact naming the artifact
    and the reason."""
    from edgeeff.kit.core import statistics_ms

    if block < 1:
        raise ValueError("block must be at least 1 run")
    workers: list[_Worker] = []
    try:
        for folder in folders:  # one at a time, so warm-ups do not overlap
            workers.append(_Worker(folder, threads, schedule, timeout))
        samples: list[list[int]] = [[] for _ in folders]
        order = list(range(len(folders)))
        while True:
            for i in order:
                samples[i] += workers[i].timings(block)
            order.reverse()
            short = any(len(s) < schedule.min_runs or sum(s) < schedule.min_seconds * 1e9 for s in samples)
            if not short or any(len(s) >= schedule.max_runs for s in samples):
                break
        return [{"path": str(folder), **statistics_ms(s)} for folder, s in zip(folders, samples)]
    except (RuntimeError, OSError, ValueError) as exc:
        return [{"path": str(folder), "error": str(exc)[:300]} for folder in folders]
    finally:
        for worker in workers:
            worker.close()


def interleaved_rounds(groups: list[list[str | Path]], rounds: int, threads: int | None, schedule: Schedule = Schedule(),
                       say: Callable[[str], None] = lambda text: print(text, flush=True),
                       together: bool = False) -> list[list[list[float]]]:
    """Median milliseconds of each artifact in ``groups``, in ``rounds`` interleaved rounds: each
    artifact in a fresh process of its own, one after another, or with ``together`` each group
    timed side by side (:func:`side_by_side`). Artifacts compared with each other share the
    machine's state in every round, so per-round ratios are fairer than ratios of separate runs on a
    noisy host. A failed measurement is left out of its artifact's list."""
    times = [[[] for _ in group] for group in groups]
    for number in range(rounds):
        say(f"round {number + 1}/{rounds}")
        for group, slots in zip(groups, times):
            rows = side_by_side(group, threads, schedule) if together else [
                measure_in_subprocess(path, threads, 1, schedule) for path in group]
            for row, slot in zip(rows, slots):
                if row.get("median_ms"):
                    slot.append(row["median_ms"])
    return times


def _main(argv: list[str]) -> int:
    import argparse

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser(prog="python -m edgeeff.measure")
    parser.add_argument("folder")
    parser.add_argument("--serve", action="store_true", help="one side of edgeeff.measure.side_by_side: timings on request")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--schedule", default="{}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="f32")
    args = parser.parse_args(argv)
    from edgeeff.errors import EdgeeffError

    try:
        if args.serve:
            from edgeeff.kit.core import serve_timings

            replies = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's own stream
            os.dup2(2, 1)  # whatever a runtime prints goes to stderr, never between the replies
            invoke = _prepared_invoke(Path(args.folder), args.threads)
            serve_timings(invoke, Schedule(**json.loads(args.schedule)), iter(sys.stdin.readline, ""),
                          lambda text: print(text, file=replies, flush=True))
            return 0
        row = measure_artifact(args.folder, args.threads, args.batch, Schedule(**json.loads(args.schedule)),
                               device=args.device, precision=None if args.precision == "default" else args.precision)
    except EdgeeffError as exc:
        print(f"edgeeff: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
