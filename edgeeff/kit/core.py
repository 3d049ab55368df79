"""The kit's core: the runner interface, timing and the one measuring function.

Each target module (``edgeeff.targets.tflite``, ...) runs its own artifacts with a runner built on
:class:`ArrayRunner`; this module finds that runner by the target's module name. Local measurements
import it; a remote device receives it inside the kit file (``edgeeff.kit.bundle``) with the target
modules and runs it there, so the figures a Raspberry Pi reports come from the same runners and the
same measuring function as the laptop's, and the device needs no edgeeff install. Keep it that way:
only the standard library and numpy at import time, runtimes imported lazily.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import numpy as np
except ImportError:  # the probe still reports; measure/predict say what to install
    np = None  # type: ignore[assignment]

KIT_VERSION = 2  # 2: a zipapp with the target modules (1: one devicekit.py)


class RunnerError(Exception):
    """A runtime could not load or run a model; one line a user can act on."""


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Schedule:
    warmup_runs: int = 10
    warmup_seconds: float = 1.0
    min_runs: int = 50
    min_seconds: float = 3.0
    max_runs: int = 100_000


def time_invocations(invoke: Callable[[], Any], schedule: Schedule = Schedule()) -> dict:
    """Warm up (both a minimum count and a minimum time), then time ``invoke()`` with
    ``perf_counter_ns`` until both minimums hold; statistics in milliseconds."""
    warmup_runs = _warm_up(invoke, schedule)
    samples: list[int] = []
    total = 0
    while (len(samples) < schedule.min_runs or total < schedule.min_seconds * 1e9) and len(samples) < schedule.max_runs:
        t0 = time.perf_counter_ns()
        invoke()
        elapsed = time.perf_counter_ns() - t0
        samples.append(elapsed)
        total += elapsed
    return {"warmup_runs": warmup_runs, **statistics_ms(samples)}


# How long a side-by-side worker runs untimed after the other one had the machine: onnxruntime's
# idle threads in the other process keep spinning for a while (measured, Lite0 int8 on 2 cores: the
# first 7-9 runs after a switch, about 0.1 s, took 1.5-3x the steady 7 ms).
SETTLE_SECONDS = 0.25


def serve_timings(invoke: Callable[[], Any], schedule: Schedule, lines: Iterator[str], write: Callable[[str], None]) -> None:
    """One side of a side-by-side timing: warm up, say ``ready``, then for each line ``N`` read, run
    untimed for ``SETTLE_SECONDS``, then at least ``N`` times timed (and for at least
    ``SETTLE_SECONDS``), and write the timings (ns) as one JSON line. Artifacts compared in
    alternating blocks of runs, each in its own process waiting on its pipe between blocks, run
    under the same machine state; two runtimes in one process do not work for this: the idle one's
    threads compete with the timed one's (measured, two onnxruntime sessions in one process: p90
    twice the median)."""
    _warm_up(invoke, schedule)
    write("ready")
    for line in lines:
        start = time.perf_counter()
        invoke()
        while time.perf_counter() - start < SETTLE_SECONDS:
            invoke()
        # At least N timed runs, and for at least as long as the settling: a small model's 16 runs
        # take a few ms, and blocks of them behind 0.25 s of settling spent 98 % of a side-by-side
        # timing untimed (measured: a 64 px Lite0 budget test, 7 min of its 7.2).
        timings, start = [], time.perf_counter_ns()
        while len(timings) < int(line) or time.perf_counter_ns() - start < SETTLE_SECONDS * 1e9:
            t0 = time.perf_counter_ns()
            invoke()
            timings.append(time.perf_counter_ns() - t0)
        write(json.dumps(timings))


def _warm_up(invoke: Callable[[], Any], schedule: Schedule) -> int:
    start = time.perf_counter()
    runs = 0
    while runs < schedule.warmup_runs or time.perf_counter() - start < schedule.warmup_seconds:
        invoke()
        runs += 1
    return runs


def statistics_ms(samples: list[int]) -> dict:
    """Timings in nanoseconds as the millisecond statistics every measurement reports."""
    ms = np.asarray(samples, dtype=np.float64) / 1e6
    return {
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
    """Peak resident memory of this process so far. On Linux this is VmHWM of /proc/self/status:
    ``ru_maxrss`` survives fork+exec, so a measuring child started by a parent holding TensorFlow
    would report the parent's peak, not its own. Elsewhere ru_maxrss (macOS reports bytes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@contextlib.contextmanager
def native_stderr_muted() -> Iterator[None]:
    """Mute native libraries' chatter on file descriptor 2 ("Created TensorFlow Lite XNNPACK
    delegate", the converter's "fully_quantize: ..."). Python errors still surface as exceptions;
    EDGEEFF_DEBUG=1 shows everything."""
    with native_stderr_captured():
        yield


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Like :func:`native_stderr_muted`, but the muted lines are kept: the list it yields is filled
    when the block ends. Runtimes explain a failed accelerator only in their log (onnxruntime names
    the missing CUDA library there and then quietly falls back to the CPU)."""
    lines: list[str] = []
    if os.environ.get("EDGEEFF_DEBUG"):
        yield lines
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile(mode="w+b") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                sink.seek(0)
                lines += sink.read().decode("utf-8", "replace").splitlines()
    finally:
        os.close(saved)


# --------------------------------------------------------------------------- accelerators

# The accelerator names a device entry may give. Each target module maps the ones its runtime can
# use (its ``ACCELERATORS``: name -> what the runtime is asked for); a runtime without an entry for
# the device's accelerator refuses with one line rather than quietly running on the CPU.
ACCELERATOR_NAMES = ("cpu", "gpu", "npu", "edgetpu", "cuda", "tensorrt", "openvino-ep", "qnn", "coreml", "directml")


def runtime_module(module: str):
    """A target's module, which runs its artifacts: ``ACCELERATORS``, ``RUNTIME_PIP`` (what to
    install) and ``open_runner(path, threads, setting, precision, prefer, batch) -> ArrayRunner``."""
    import importlib

    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        raise RunnerError(f"this kit cannot run {module} ({exc})") from None
    if not hasattr(found, "open_runner"):
        raise RunnerError(f"{module} has no runner (open_runner)")
    return found


def accelerator_setting(accelerator: str, module: str) -> Any:
    """What the target's runtime is asked for to run on ``accelerator``."""
    if accelerator not in ACCELERATOR_NAMES:
        raise RunnerError(f"unknown accelerator {accelerator!r}; known: {', '.join(ACCELERATOR_NAMES)}")
    table = runtime_module(module).ACCELERATORS
    if accelerator not in table:
        takers = [name for name in table if name != "cpu"]
        raise RunnerError(f"{module.rsplit('.', 1)[-1]} cannot use accelerator {accelerator!r}"
                          + (f" (it can use: {', '.join(takers)})" if takers else " (it runs on the CPU only)"))
    return table[accelerator]


# --------------------------------------------------------------------------- runners


class ArrayRunner(abc.ABC):
    """Shared shape of the runners: ``prepare`` (outside any timed region; it may bind the input to
    the runtime, as the runtimes' own benchmark tools do), ``invoke`` (the runtime's own call on the
    last prepared batch, the only thing a latency measurement times), ``finish``. float32 (N, H, W, 3)
    pixels in 0-255 go in, float32 class logits come out."""

    def prepare(self, batch):
        return np.ascontiguousarray(batch, dtype=np.float32)

    @abc.abstractmethod
    def invoke(self, prepared):
        """Run the runtime once on a prepared batch."""

    def finish(self, raw):
        return np.asarray(raw, dtype=np.float32)

    def predict(self, batch):
        return self.finish(self.invoke(self.prepare(batch)))

    @abc.abstractmethod
    def describe(self) -> dict:
        """Runtime, where the work really ran, input and output."""


class AdaptedInput(ArrayRunner):
    """A model that does not take edgeeff's input (NHWC RGB pixels in 0-255, normalised inside the
    graph), run behind one: the pixels are normalised with the given mean/std and, for a
    channels-first model, transposed, before the model's own ``prepare`` (outside any timed region)."""

    def __init__(self, inner: ArrayRunner, mean=None, std=None, layout: str = "NHWC") -> None:
        self.inner, self.layout = inner, layout
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)

    def prepare(self, batch):
        x = np.asarray(batch, dtype=np.float32)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self.layout == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return self.inner.prepare(x)

    def invoke(self, prepared):
        return self.inner.invoke(prepared)

    def finish(self, raw):
        return self.inner.finish(raw)

    def describe(self) -> dict:
        adapter = {"layout": self.layout, "mean": None if self.mean is None else self.mean.tolist(),
                   "std": None if self.std is None else self.std.tolist()}
        return {**self.inner.describe(), "input_adapter": adapter}


def load_runner(module: str, path: str | Path, threads: int | None = None, accelerator: str = "cpu", precision: str | None = "f32",
                prefer: str | None = None, batch: int = 1, adapt: dict | None = None) -> ArrayRunner:
    """The one way a model file becomes a runner, here or on a device: the target module's
    ``open_runner``. ``precision`` is OpenVINO's INFERENCE_PRECISION_HINT ("f32" so fp32 means fp32;
    None for the plugin's own choice). ``adapt`` (mean, std, layout) wraps a model that takes other
    input than edgeeff's (:class:`AdaptedInput`)."""
    setting = accelerator_setting(accelerator, module)
    if np is None:
        raise RunnerError(f"numpy is missing: pip install numpy {runtime_module(module).RUNTIME_PIP}")
    runner = runtime_module(module).open_runner(path, threads, setting, precision, prefer, batch)
    return AdaptedInput(runner, **adapt) if adapt else runner


def random_pixels(resolution: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    """The seeded input every latency measurement times (timings do not depend on pixel values,
    but comparisons across measurements should not even have to ask)."""
    return np.random.default_rng(seed).uniform(0, 255, size=(batch, resolution, resolution, 3)).astype(np.float32)


def measure(module: str, path: str | Path, resolution: int, threads: int | None = None, batch: int = 1,
            schedule: Schedule = Schedule(), seed: int = 0, accelerator: str = "cpu", precision: str | None = "f32",
            prefer: str | None = None, adapt: dict | None = None) -> dict:
    """Load, time the first inference, then :func:`time_invocations` on a prepared random input."""
    rss_before = peak_rss_mb()
    t0 = time.perf_counter_ns()
    runner = load_runner(module, path, threads, accelerator, precision, prefer, batch, adapt)
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    pixels = random_pixels(resolution, batch, seed)
    prepared = runner.prepare(pixels)  # outside the timed region
    t0 = time.perf_counter_ns()
    runner.invoke(prepared)
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    stats = time_invocations(lambda: runner.invoke(prepared), schedule)
    return {
        "batch": batch,
        "device": accelerator,
        "threads": threads or os.cpu_count(),
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        **stats,
        "throughput_ips": batch * 1000.0 / stats["median_ms"],
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_load_mb": rss_before,
        "runner": runner.describe(),
    }


# --------------------------------------------------------------------------- the device itself
