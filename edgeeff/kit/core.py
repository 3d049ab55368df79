"""The device kit: everything that runs where the model runs, in one file that needs only the
standard library, numpy and a runtime.

Local measurements import it; a remote device receives a copy of this very file over SSH and runs it
as a script (``python devicekit.py probe | measure JOB | predict JOB``), so the figures a Raspberry Pi
reports come from the same runners and the same measuring function as the laptop's, and the device
needs no edgeeff install. Keep it that way: no ``edgeeff`` imports here, runtimes imported lazily.
"""

from __future__ import annotations

import abc
import contextlib
import io
import json
import os
import platform
import re
import resource
import shutil
import struct
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

KIT_VERSION = 1


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
    untimed for ``SETTLE_SECONDS``, then ``N`` times timed, and write the timings (ns) as one JSON
    line. Artifacts compared in alternating blocks of runs, each in its own process waiting on its
    pipe between blocks, run under the same machine state; two runtimes in one process do not work
    for this: the idle one's threads compete with the timed one's (measured, two onnxruntime
    sessions in one process: p90 twice the median)."""
    _warm_up(invoke, schedule)
    write("ready")
    for line in lines:
        start = time.perf_counter()
        invoke()
        while time.perf_counter() - start < SETTLE_SECONDS:
            invoke()
        timings = []
        for _ in range(int(line)):
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

# What each accelerator name asks of each runtime. A device entry names one; a runtime that has no
# entry for it refuses with one line rather than quietly running on the CPU.
ACCELERATORS: dict[str, dict[str, Any]] = {
    "cpu": {"tflite": None, "onnx": ["CPUExecutionProvider"], "openvino": "CPU", "keras": "CPU"},
    "gpu": {"onnx": ["CUDAExecutionProvider"], "openvino": "GPU", "keras": "GPU"},
    "npu": {"openvino": "NPU", "onnx": ["QNNExecutionProvider"]},
    "edgetpu": {"tflite": "libedgetpu.so.1"},
    "cuda": {"onnx": ["CUDAExecutionProvider"]},
    "tensorrt": {"onnx": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]},
    "openvino-ep": {"onnx": ["OpenVINOExecutionProvider"]},
    "qnn": {"onnx": ["QNNExecutionProvider"]},
    "coreml": {"onnx": ["CoreMLExecutionProvider"]},
    "directml": {"onnx": ["DmlExecutionProvider"]},
}

# Which pip package brings an onnxruntime execution provider.
PROVIDER_PACKAGES = {
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "TensorrtExecutionProvider": "onnxruntime-gpu (and TensorRT)",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "QNNExecutionProvider": "onnxruntime-qnn",
    "DmlExecutionProvider": "onnxruntime-directml",
    "CoreMLExecutionProvider": "onnxruntime (macOS build)",
}

# What an execution provider needs besides the wheel, for the line that explains a failed start.
PROVIDER_NEEDS = {
    "CUDAExecutionProvider": "onnxruntime-gpu needs the CUDA and cuDNN versions it was built for "
                             "(pip install 'onnxruntime-gpu[cuda,cudnn]', or those libraries on LD_LIBRARY_PATH) and an NVIDIA driver",
    "TensorrtExecutionProvider": "it needs TensorRT's libraries (pip install tensorrt, or libnvinfer on LD_LIBRARY_PATH) besides CUDA",
}


def provider_failure(log: list[str]) -> str:
    """The cause onnxruntime logged for a provider it could not start, as ": cause", or ""."""
    for line in log:
        if line.startswith("EP Error"):
            return ": " + line.rsplit(") ", 1)[-1].strip()[:200]
    for line in log:
        if "with error:" in line:
            return ": " + line.split("with error:", 1)[1].strip()[:200]
    for line in log:
        if "Failed to create" in line or "ExecutionProvider" in line:
            return ": " + re.sub(r"\x1b\[[0-9;]*m", "", line).split("]", 1)[-1].strip()[:200]
    return ""


def _preload_cuda_libraries(ort) -> None:
    """onnxruntime-gpu's own loader for CUDA/cuDNN from pip's nvidia-* wheels (what
    ``pip install 'onnxruntime-gpu[cuda,cudnn]'`` installs but the system loader cannot see). It
    prints its warnings, so stdout, which carries the kit's replies, is kept clean."""
    try:
        with contextlib.redirect_stdout(sys.stderr), native_stderr_muted():
            ort.preload_dlls()
    except Exception:  # a failed preload shows up as the provider failing to start, with its cause
        pass


EDGETPU_HELP = ("install the Edge TPU runtime: Coral's apt repository, package libedgetpu1-std "
                "(https://coral.ai/docs/accelerator/get-started/)")


def accelerator_setting(accelerator: str, backend: str) -> Any:
    table = ACCELERATORS.get(accelerator)
    if table is None:
        raise RunnerError(f"unknown accelerator {accelerator!r}; known: {', '.join(ACCELERATORS)}")
    if backend not in table:
        takers = [name for name, t in ACCELERATORS.items() if backend in t and name != "cpu"]
        raise RunnerError(f"{backend} cannot use accelerator {accelerator!r}"
                          + (f" (it can use: {', '.join(takers)})" if takers else " (it runs on the CPU only)"))
    return table[backend]


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


RUNTIME_PIP = {"tflite": "ai-edge-litert", "onnx": "onnxruntime", "openvino": "openvino", "keras": "tensorflow keras"}
TFLITE_RUNTIMES = {"ai-edge-litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}


def tflite_module(prefer: str | None = None):
    """(interpreter module, distribution name): ai-edge-litert first, tflite-runtime as fallback,
    or the device entry's preferred one first."""
    import importlib

    order = list(TFLITE_RUNTIMES)
    if prefer in TFLITE_RUNTIMES:
        order.remove(prefer)
        order.insert(0, prefer)
    for dist in order:
        try:
            return importlib.import_module(TFLITE_RUNTIMES[dist]), dist
        except ImportError:
            continue
    raise RunnerError("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime)")


class TFLiteRunner(ArrayRunner):
    def __init__(self, path: str | Path, threads: int | None = None, delegate: str | None = None, prefer: str | None = None) -> None:
        module, self.runtime = tflite_module(prefer)
        path = Path(path)
        delegates = []
        self.delegate = delegate
        if delegate:
            failure = None
            try:
                delegates.append(module.load_delegate(delegate))
            except Exception as exc:  # OSError or ValueError, depending on the runtime build
                failure = str(exc).splitlines()[0][:100]
            if failure:
                import gc

                with native_stderr_muted():  # the half-made Delegate complains from __del__ when collected
                    gc.collect()
                raise RunnerError(f"cannot load the TFLite delegate {delegate} ({failure}): {EDGETPU_HELP}")
        try:
            with native_stderr_muted():
                self.interp = module.Interpreter(model_path=str(path), num_threads=threads or os.cpu_count(),
                                                 experimental_delegates=delegates or None)
        except (ValueError, RuntimeError) as exc:
            raise RunnerError(f"cannot load {path.name} as a TFLite model: {str(exc).splitlines()[0][:160]}") from None
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        self._batch = None

    def _resize(self, n: int) -> None:
        if self._batch != n:
            shape = list(self.input["shape"])
            shape[0] = n
            self.interp.resize_tensor_input(self.input["index"], shape)
            with native_stderr_muted():  # the XNNPACK delegate announces itself here
                self.interp.allocate_tensors()
            self._batch = n

    def prepare(self, batch):
        """Float pixels to the model's input dtype (quantized with its scale/zero point), bound to
        the interpreter's input tensor."""
        self._resize(len(batch))
        dtype = self.input["dtype"]
        if dtype in (np.int8, np.uint8):
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            prepared = np.clip(np.round(batch / scale + zero), info.min, info.max).astype(dtype)
        else:
            prepared = batch.astype(dtype)
        self.interp.set_tensor(self.input["index"], prepared)
        return prepared

    def invoke(self, prepared):
        self.interp.invoke()
        return self.interp.get_tensor(self.output["index"])

    def finish(self, raw):
        if self.output["dtype"] in (np.int8, np.uint8):
            scale, zero = self.output["quantization"]
            return (raw.astype(np.float32) - zero) * scale
        return raw.astype(np.float32)

    def op_placement(self) -> dict:
        """Ops in the model's own table, and how many of them the Edge TPU compiler mapped to the TPU
        (each mapped subgraph is one ``edgetpu-custom-op``); without a delegate, XNNPACK takes what it can."""
        ops = [op["op_name"] for op in self.interp._get_ops_details()]  # the interpreter's op table; no public equivalent
        tpu = sum(1 for name in ops if "edgetpu" in name.lower())
        return {"ops": len(ops), "edgetpu_custom_ops": tpu, "cpu_ops": len(ops) - tpu}

    def describe(self) -> dict:
        def info(d):
            return {"name": d["name"], "shape": [int(v) for v in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name,
                    "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}

        return {"runtime": self.runtime, "delegate": self.delegate or "XNNPACK (default CPU delegate)",
                "placement": self.op_placement(), "input": info(self.input), "output": info(self.output)}


class OnnxRunner(ArrayRunner):
    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerError("no ONNX runtime: pip install onnxruntime") from None
        path = Path(path)
        wanted = list(providers or ["CPUExecutionProvider"])
        available = ort.get_available_providers()
        absent = [p for p in wanted if p not in available]
        if absent:
            raise RunnerError(f"onnxruntime here has no {absent[0]} (available: {', '.join(available)}): "
                              f"pip install {PROVIDER_PACKAGES.get(absent[0], 'an onnxruntime build with it')}")
        if "CPUExecutionProvider" not in wanted:
            wanted.append("CPUExecutionProvider")  # fallback for nodes the accelerator cannot take; reported below
        self.requested = wanted

        def options(profile: bool = False):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads or os.cpu_count() or 1
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if profile:
                opts.enable_profiling = True
                opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="edgeeff-ortprof-"), "p")
            return opts

        self._options = options
        self._path = path
        accelerated = [p for p in wanted if p != "CPUExecutionProvider"]
        if accelerated and hasattr(ort, "preload_dlls"):
            _preload_cuda_libraries(ort)
        try:
            printed = io.StringIO()  # its Python side prints "EP Error ... Falling back" on stdout, the kit's reply channel
            with native_stderr_captured() as log, contextlib.redirect_stdout(printed):
                self.session = ort.InferenceSession(str(path), options(), providers=wanted)
            log[:0] = printed.getvalue().splitlines()
        except Exception as exc:
            raise RunnerError(f"cannot load {path.name} as an ONNX model: {str(exc).splitlines()[0][:160]}") from None
        lost = [p for p in accelerated if p not in self.session.get_providers()]
        if lost:  # onnxruntime logs the cause and runs on the CPU instead: never measure that as the GPU
            raise RunnerError(f"onnxruntime could not start {lost[0]}{provider_failure(log)}; "
                              f"{PROVIDER_NEEDS.get(lost[0], 'see the provider requirements of this onnxruntime build')}")
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]
        self._placement: dict | None = None

    def invoke(self, prepared):
        return self.session.run([self.output.name], {self.input.name: prepared})[0]

    def node_placement(self) -> dict:
        """Nodes per execution provider, read from onnxruntime's own profile of one run in a second
        session, so a fallback to the CPU is counted, never silent."""
        if self._placement is None:
            import onnxruntime as ort

            session = ort.InferenceSession(str(self._path), self._options(profile=True), providers=self.requested)
            shape = [d if isinstance(d, int) else 1 for d in self.input.shape]
            session.run(None, {self.input.name: np.zeros(shape, dtype=np.float32)})
            profile = Path(session.end_profiling())
            counts: dict[str, int] = {}
            for event in json.loads(profile.read_text()):
                args = event.get("args", {})
                if event.get("cat") == "Node" and "provider" in args and event.get("name", "").endswith("_kernel_time"):
                    counts[args["provider"]] = counts.get(args["provider"], 0) + 1
            shutil.rmtree(profile.parent, ignore_errors=True)
            self._placement = counts
        return self._placement

    def describe(self) -> dict:
        row = {
            "runtime": "onnxruntime",
            "providers": self.session.get_providers(),
            "input": {"name": self.input.name, "shape": list(self.input.shape), "dtype": self.input.type},
            "output": {"name": self.output.name, "shape": list(self.output.shape), "dtype": self.output.type},
        }
        if self.requested != ["CPUExecutionProvider"]:
            row["nodes_by_provider"] = self.node_placement()
        return row


def _type_name(value) -> str:
    """OpenVINO element types print as "<Type: 'float32'>"; their short names are what users set."""
    return value.to_string() if hasattr(value, "to_string") else str(value)


WEIGHTED_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")


def _layer_precisions(compiled) -> dict:
    """How many convolution/matmul layers the plugin really runs at each precision (its runtime
    graph's ``runtimePrecision``): the inference precision hint only governs the float ops, so an
    int8 IR compiled with hint f32 runs its quantized layers in u8/i8."""
    counts: dict = {}
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" in info and info["layerType"].astype(str) in WEIGHTED_LAYERS:
                precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
                counts[precision] = counts.get(precision, 0) + 1
    except Exception:  # a plugin without a runtime model (remote GPU plugins): the hint alone is reported
        return {}
    return counts


class OpenVINORunner(ArrayRunner):
    """Compiles the IR for a static batch size (``batch``, and again for any other size a batch
    brings, cached): the IRs keep a dynamic batch axis, and the CPU plugin runs a dynamic shape
    about 15 % slower than a static one (Lite0, measured against benchmark_app, which reshapes too)."""

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "CPU", precision_hint: str | None = "f32",
                 batch: int = 1) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise RunnerError("no OpenVINO runtime: pip install openvino") from None
        core = ov.Core()
        if device != "CPU" and device not in core.available_devices:
            raise RunnerError(f"OpenVINO has no {device} device here (available: {', '.join(core.available_devices)}); "
                              f"install the {device} driver/plugin (https://docs.openvino.ai, 'Additional configurations')")
        config: dict[str, Any] = {}
        if threads and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if precision_hint:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        self._core, self._config, self.device, self._path = core, config, device, Path(path)
        try:
            self._model = core.read_model(str(path))
        except Exception as exc:
            raise RunnerError(f"cannot load {Path(path).name} with OpenVINO {device}: {str(exc).splitlines()[0][:160]}") from None
        self._shape = self._model.inputs[0].get_partial_shape()  # as saved: the batch axis is dynamic
        self._out_shape = self._model.outputs[0].get_partial_shape()
        self._compiled_for: dict[int, Any] = {}
        self._select(batch)

    def _select(self, n: int) -> None:
        """The compiled model and request for batch size ``n`` (compiled on first use)."""
        if n not in self._compiled_for:
            import openvino as ov

            shape = self._shape
            if shape.rank.is_static and shape.rank.get_length() == 4 and shape[0].is_dynamic:
                self._model.reshape({self._model.inputs[0]: ov.PartialShape([ov.Dimension(n), *list(shape)[1:]])})
            try:
                compiled = self._core.compile_model(self._model, self.device, self._config)
            except Exception as exc:
                raise RunnerError(f"cannot load {self._path.name} with OpenVINO {self.device}: {str(exc).splitlines()[0][:160]}") from None
            self._compiled_for[n] = (compiled, compiled.create_infer_request())
        self.compiled, self.request = self._compiled_for[n]

    def prepare(self, batch):
        """Bind the batch to the request's input without a copy (as benchmark_app does)."""
        import openvino as ov

        prepared = np.ascontiguousarray(batch, dtype=np.float32)
        self._select(prepared.shape[0])
        self.request.set_input_tensor(ov.Tensor(prepared, shared_memory=True))
        self._bound = prepared  # keep the shared buffer alive while it is bound
        return prepared

    def invoke(self, prepared):
        self.request.infer()
        return self.request.get_output_tensor(0).data

    def finish(self, raw):
        return np.array(raw, dtype=np.float32, copy=True)  # the output buffer is reused by the next infer

    def describe(self) -> dict:
        return {
            "runtime": "openvino",
            "device": self.device,
            "execution_devices": list(self.compiled.get_property("EXECUTION_DEVICES")),
            "inference_precision": _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
            "layer_precisions": _layer_precisions(self.compiled),
            "input": {"name": self.compiled.inputs[0].get_any_name(), "shape": str(self._shape),
                      "compiled_for_batch": sorted(self._compiled_for)},
            "output": {"name": self.compiled.outputs[0].get_any_name(), "shape": str(self._out_shape)},
        }


class KerasRunner(ArrayRunner):
    """The Keras model itself (a ``.keras`` file) under TensorFlow: the framework baseline every
    converted artifact is compared with, and TensorFlow's own GPU path. The call is one traced
    ``tf.function`` (what ``model.predict`` runs per batch, without its per-call data pipeline), and
    ``invoke`` waits for the result, so GPU time is not hidden by asynchronous dispatch."""

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "CPU") -> None:
        try:
            with native_stderr_muted():
                import keras
                import tensorflow as tf
        except ImportError:
            raise RunnerError("no TensorFlow/Keras here: pip install tensorflow keras") from None
        if threads:
            try:  # only possible before TensorFlow's first op; a fresh measuring process always is
                tf.config.threading.set_intra_op_parallelism_threads(int(threads))
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass
        if device == "GPU" and not tf.config.list_physical_devices("GPU"):
            raise RunnerError("TensorFlow sees no GPU here: on a CUDA machine pip install 'tensorflow[and-cuda]' "
                              "(tensorflow-cpu has no GPU support)")
        self._tf = tf
        self.device = f"/{device}:0"
        try:
            with native_stderr_muted(), tf.device(self.device):
                self.model = keras.saving.load_model(str(path), compile=False)
        except Exception as exc:
            raise RunnerError(f"cannot load {Path(path).name} as a Keras model: {str(exc).splitlines()[0][:160]}") from None
        model, where = self.model, self.device

        def call(x):
            with tf.device(where):  # fixed when traced, so the timed call carries no device scope of its own
                return model(x, training=False)

        self._call = tf.function(call, reduce_retracing=True)
        self._ran_on: str | None = None

    def prepare(self, batch):
        """Copy the batch to the device outside the timed region (as the other runners bind theirs)."""
        with self._tf.device(self.device):
            return self._tf.identity(self._tf.constant(np.ascontiguousarray(batch, dtype=np.float32)))

    def invoke(self, prepared):
        out = self._call(prepared)
        if self._ran_on is None:
            self._ran_on = out.device
        return out.numpy()

    def describe(self) -> dict:
        import keras

        return {
            "runtime": "tensorflow",
            "keras": keras.__version__,
            "tensorflow": self._tf.__version__,
            "device": self.device,
            "execution_devices": [self._ran_on.rsplit("device:", 1)[-1]] if self._ran_on else [self.device.strip("/")],
            "input": {"shape": [None, *self.model.input_shape[1:]], "dtype": "float32"},
            "output": {"shape": [None, *self.model.output_shape[1:]], "dtype": "float32"},
        }


def load_runner(backend: str, path: str | Path, threads: int | None = None, accelerator: str = "cpu", precision: str | None = "f32",
                prefer: str | None = None, batch: int = 1, adapt: dict | None = None) -> ArrayRunner:
    """The one way a model file becomes a runner, here or on a device. ``precision`` is OpenVINO's
    INFERENCE_PRECISION_HINT ("f32" so fp32 means fp32; None for the plugin's own choice). ``adapt``
    (mean, std, layout) wraps a model that takes other input than edgeeff's (:class:`AdaptedInput`)."""
    if np is None:
        raise RunnerError(f"numpy is missing: pip install numpy {RUNTIME_PIP.get(backend, '')}".rstrip())
    runner = _load_runner(backend, path, threads, accelerator, precision, prefer, batch)
    return AdaptedInput(runner, **adapt) if adapt else runner


def _load_runner(backend: str, path: str | Path, threads: int | None, accelerator: str, precision: str | None, prefer: str | None,
                 batch: int) -> ArrayRunner:
    setting = accelerator_setting(accelerator, backend)
    if backend == "tflite":
        return TFLiteRunner(path, threads, delegate=setting, prefer=prefer)
    if backend == "onnx":
        return OnnxRunner(path, threads, providers=setting)
    if backend == "keras":
        return KerasRunner(path, threads, device=setting)
    if backend == "openvino":
        return OpenVINORunner(path, threads or (os.cpu_count() if setting == "CPU" else None), device=setting, precision_hint=precision,
                              batch=batch)
    raise RunnerError(f"unknown backend {backend!r}")


def random_pixels(resolution: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    """The seeded input every latency measurement times (timings do not depend on pixel values,
    but comparisons across measurements should not even have to ask)."""
    return np.random.default_rng(seed).uniform(0, 255, size=(batch, resolution, resolution, 3)).astype(np.float32)


def measure(backend: str, path: str | Path, resolution: int, threads: int | None = None, batch: int = 1,
            schedule: Schedule = Schedule(), seed: int = 0, accelerator: str = "cpu", precision: str | None = "f32",
            prefer: str | None = None, adapt: dict | None = None) -> dict:
    """Load, time the first inference, then :func:`time_invocations` on a prepared random input."""
    rss_before = peak_rss_mb()
    t0 = time.perf_counter_ns()
    runner = load_runner(backend, path, threads, accelerator, precision, prefer, batch, adapt)
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

RUNTIME_DISTRIBUTIONS = ("numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "onnxruntime-gpu", "openvino")


def _cpuinfo() -> dict[str, str]:
    """/proc/cpuinfo's first value of each field, keys lower-cased."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = line.split(":", 1)
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def _cpuinfo_is_foreign(fields: dict[str, str]) -> bool:
    """An aarch64 process reading an x86 kernel's cpuinfo: user-mode emulation (qemu-user) passes the
    host's file through, so its "model name" and "flags" describe the host, not this CPU."""
    return platform.machine() in ("aarch64", "arm64") and "flags" in fields and "features" not in fields


def cpu_model() -> str:
    """x86 names its CPU in "model name"; ARM boards in "Hardware" or "Model" (a Pi: "Raspberry Pi 4 Model B")."""
    fields = _cpuinfo()
    if _cpuinfo_is_foreign(fields):
        return f"emulated {platform.machine()}"  # the model name there is the host's
    for key in ("model name", "hardware", "model", "cpu model"):
        if fields.get(key) and not fields[key].isdigit():
            return fields[key]
    return platform.processor() or platform.machine()


# Linux arm64 hardware capability bits (arch/arm64/include/uapi/asm/hwcap.h): the names the kernel
# prints in /proc/cpuinfo "Features". asimd = NEON, asimddp = SDOT/UDOT, i8mm = SMMLA/USMMLA (int8 kernels).
ARM64_HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 "
               "asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
ARM64_HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm bf16 "
                "dgh rng bti mte ecv afp rpres mte3 sme sme_i16i64 sme_f64f64 sme_i8i32 sme_f16f32 sme_b16f32 sme_f32f32 sme_fa64 "
                "wfxt ebf16 sve_ebf16").split()
AT_HWCAP, AT_HWCAP2 = 16, 26


def _auxv_hwcaps() -> tuple[int, int] | None:
    """AT_HWCAP and AT_HWCAP2 from /proc/self/auxv (pairs of native words): what the kernel, or an
    emulator, tells this very process its CPU can do; runtimes choose their kernels from the same words."""
    raw = None
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return None
    size = struct.calcsize("@L")
    words = struct.unpack(f"@{len(raw) // size}L", raw[: len(raw) // size * size])
    pairs = dict(zip(words[0::2], words[1::2]))
    return pairs.get(AT_HWCAP, 0), pairs.get(AT_HWCAP2, 0)


def cpu_features() -> tuple[list[str], str]:
    """The CPU features the kernel reports and where they were read: /proc/cpuinfo "Features" on an
    ARM kernel; on aarch64 without it (user-mode emulation) the auxiliary vector's hardware caps,
    decoded to the kernel's names; x86's "flags" otherwise."""
    fields = _cpuinfo()
    if "features" in fields:
        return fields["features"].split(), "/proc/cpuinfo Features"
    if platform.machine() in ("aarch64", "arm64"):
        caps = _auxv_hwcaps()
        if caps is not None:
            names = [n for bit, n in enumerate(ARM64_HWCAP) if caps[0] >> bit & 1]
            names += [n for bit, n in enumerate(ARM64_HWCAP2) if caps[1] >> bit & 1]
            return names, "AT_HWCAP/AT_HWCAP2 (/proc/self/auxv)"
    if "flags" in fields:
        return fields["flags"].split(), "/proc/cpuinfo flags"
    return [], "not reported"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def probe(workdir: str | None = None) -> dict:
    """What a device is: CPU, cores, OS, architecture, the CPU features the kernel reports (on ARM
    asimd, asimddp, i8mm decide which int8 kernels run), Python, runtimes present, free disk, and on a
    Raspberry Pi the SoC temperature and the firmware's throttling flags."""
    from importlib import metadata

    runtimes = {}
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            runtimes[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    where = Path(workdir).expanduser() if workdir else Path.home()
    while not where.exists() and where != where.parent:
        where = where.parent
    disk = shutil.disk_usage(where)
    features, features_source = cpu_features()
    info: dict[str, Any] = {
        "kit_version": KIT_VERSION,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "distribution": (_read("/etc/os-release") or "").split("PRETTY_NAME=")[-1].split("\n")[0].strip('"') or None,
        "machine": platform.machine(),
        "cpu_features": features,
        "cpu_features_source": features_source,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "runtimes": runtimes,
        "free_disk_gb": round(disk.free / 1e9, 2),
        "memory_total_mb": None,
        "board": (_read("/proc/device-tree/model") or "").rstrip("\x00") or None,
    }
    meminfo = _read("/proc/meminfo")
    if meminfo:
        info["memory_total_mb"] = round(int(meminfo.splitlines()[0].split()[1]) / 1024)
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    if temp and temp.lstrip("-").isdigit():
        info["temperature_c"] = int(temp) / 1000
    if shutil.which("vcgencmd"):  # Raspberry Pi firmware: throttled=0x0 means no throttling, ever
        import subprocess

        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True).stdout.strip()
        info["throttled"] = out.split("=", 1)[-1] or None
    return info


# --------------------------------------------------------------------------- the script side

def _frames_in(stream) -> Iterator[bytes]:
    """Length-prefixed frames (8-byte big-endian length, then the bytes); a zero length ends."""
    while True:
        head = stream.read(8)
        if len(head) < 8:
            return
        (size,) = struct.unpack(">Q", head)
        if size == 0:
            return
        yield stream.read(size)


def write_frame(stream, payload: bytes) -> None:
    stream.write(struct.pack(">Q", len(payload)))
    stream.write(payload)
    stream.flush()


def array_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def array_from(payload: bytes):
    return np.load(io.BytesIO(payload), allow_pickle=False)


def _script(argv: list[str]) -> int:
    """``probe [WORKDIR]``; ``measure JOB_JSON`` prints one JSON line; ``predict JOB_JSON`` answers
    each framed batch on stdin with a framed batch of logits on stdout (after one JSON line that
    describes the runner). Errors: one line on stderr, exit 3."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not argv:
        print("usage: devicekit.py probe [WORKDIR] | measure JOB | predict JOB", file=sys.stderr)
        return 2
    try:
        if argv[0] == "probe":
            print(json.dumps(probe(argv[1] if len(argv) > 1 else None)))
            return 0
        job = json.loads(argv[1])
        if argv[0] == "measure":
            row = measure(job["backend"], job["path"], job["resolution"], job.get("threads"), job.get("batch", 1),
                          Schedule(**job.get("schedule", {})), job.get("seed", 0), job.get("accelerator", "cpu"),
                          job.get("precision", "f32"), job.get("prefer"), job.get("adapt"))
            print(json.dumps(row), flush=True)
            return 0
        if argv[0] == "predict":
            runner = load_runner(job["backend"], job["path"], job.get("threads"), job.get("accelerator", "cpu"),
                                 job.get("precision", "f32"), job.get("prefer"), adapt=job.get("adapt"))
            out = sys.stdout.buffer
            write_frame(out, json.dumps(runner.describe()).encode())
            for payload in _frames_in(sys.stdin.buffer):
                write_frame(out, array_bytes(runner.predict(array_from(payload))))
            return 0
    except RunnerError as exc:
        print(f"edgeeff-kit: error: {exc}", file=sys.stderr)
        return 3
    print(f"edgeeff-kit: unknown command {argv[0]!r}", file=sys.stderr)
    return 2


def kit_source() -> bytes:
    """This file's bytes: what is copied to a device (cached there by content hash)."""
    return Path(__file__).read_bytes()


if __name__ == "__main__":
    sys.exit(_script(sys.argv[1:]))

