"""TensorFlow Lite: export through a SavedModel (the robust route with Keras 3), run under
ai-edge-litert, falling back to tflite-runtime."""

from __future__ import annotations

import os
from pathlib import Path

from edgeeff.errors import EdgeeffError
from edgeeff.kit.core import ArrayRunner, RunnerError, native_stderr_muted, np  # None without numpy: the kit's probe still loads this module
from edgeeff.targets.base import TargetSpec, versions


def export(model, spec: TargetSpec, dest: Path, calibration=None, options: dict | None = None, saved_model: Path | None = None,
           progress=None) -> dict:
    import tensorflow as tf

    options = options or {}
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if spec.precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif spec.precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif spec.precision == "int8":
        from edgeeff.calibration.adapters import tflite_representative_dataset

        io_dtype = {"int8": tf.int8, "uint8": tf.uint8}[options.get("io_dtype") or "int8"]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = tflite_representative_dataset(calibration, progress)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_dtype
        converter.inference_output_type = io_dtype
    blocks = options.get("float_blocks") or []
    kept: set[str] = set()
    if blocks:
        from edgeeff.model import blockmap

        kept = blockmap.layers_of(model, blockmap.check_units(model, blocks))
    try:
        with native_stderr_muted():
            if blocks:
                flat = _selectively_quantized(tf, converter, saved_model, blocks, kept, calibration)
            else:
                flat = converter.convert()
    except EdgeeffError:
        raise
    except Exception as exc:
        raise EdgeeffError(f"TFLite conversion failed: {str(exc).splitlines()[0][:200]}") from None
    dest.write_bytes(flat)
    details = {"runtime": versions("ai-edge-litert|tflite-runtime"), "converter": versions("tensorflow-cpu|tensorflow")}
    if spec.precision == "int8":
        details["float_ops"] = float_ops(dest)
        details["fully_integer"] = not details["float_ops"]
        # What validation refuses: float ops beyond the blocks asked to stay in float
        details["unexpected_float_ops"] = float_ops(dest, kept) if blocks else details["float_ops"]
        if blocks:
            details["float_blocks"] = blocks
    if spec.accelerator == "edgetpu":
        details.update(compile_edgetpu(dest))
    return details


def compile_edgetpu(dest: Path) -> dict:
    """Compile a full-integer model for the Edge TPU in place; the uncompiled model stays beside it
    as the CPU twin that validation runs (the compiled one needs the TPU). The compiler's own count
    of the ops it mapped goes into the metadata."""
    import re
    import subprocess

    twin = dest.with_name("model_cpu_twin.tflite")
    dest.rename(twin)
    try:
        done = subprocess.run(["edgetpu_compiler", "--show_operations", "--out_dir", str(dest.parent), str(twin)],
                              capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise EdgeeffError("edgetpu_compiler is not on PATH: install edgetpu-compiler from Coral's apt repository "
                           "(https://coral.ai/docs/edgetpu/compiler/)") from None
    compiled = dest.parent / f"{twin.stem}_edgetpu.tflite"
    if done.returncode != 0 or not compiled.is_file():
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise EdgeeffError(f"edgetpu_compiler failed: {(lines[-1] if lines else f'exit {done.returncode}')[:200]}")
    compiled.rename(dest)
    mapped = re.search(r"Number of operations that will run on Edge TPU:\s*(\d+)", done.stdout)
    on_cpu = re.search(r"Number of operations that will run on CPU:\s*(\d+)", done.stdout)
    return {"cpu_twin": twin.name, "edgetpu_ops": int(mapped.group(1)) if mapped else None,
            "cpu_ops_after_compile": int(on_cpu.group(1)) if on_cpu else None,
            "compiler": done.stdout.splitlines()[0] if done.stdout else "edgetpu_compiler"}


def _ops_of(interp, layers: set[str]) -> dict[int, list[str]]:
    """The ops that compute the given Keras layers: op index -> its output tensors' names. An op is
    named by its output tensor, but the layer that writes the graph's output gets the signature's
    name (``StatefulPartitionedCall_1:0``, no layer path; ``...:01`` in front of an int8 output's
    QUANTIZE), so such an op is named by its constant inputs instead (``lite0_1/predictions_1/MatMul``)."""
    from edgeeff.model import blockmap

    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the interpreter's own op table; no public equivalent
    produced = {i for op in ops for i in op["outputs"]}
    out = {}
    for op in ops:
        tensors = list(op["outputs"])
        if not any("/" in names.get(i, "") for i in tensors):
            tensors = [i for i in op["inputs"] if i >= 0 and i not in produced]
        if any(blockmap.layer_in_name(names[i], layers) for i in tensors if i in names):
            out[op["index"]] = [names[i] for i in op["outputs"]]
    return out


def _selectively_quantized(tf, converter, saved_model: Path, blocks: list[str], layers: set[str], calibration) -> bytes:
    """Full-integer except the given Keras blocks: the converter's quantization debugger with a
    deny-list of those blocks' ops (TFLite's own selective quantization), int8 input/output kept.
    The deny-list names come from the float model's tensors, which keep the Keras layer names. With
    the classifier in float its logits are still written as int8; read before that rounding they
    answered the same (measured, Lite1: the same 12 of 397 top-1 answers differ from fp32).
    """
    from edgeeff.calibration.adapters import tflite_representative_dataset

    module, _ = tflite_module()
    interp = module.Interpreter(model_content=tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert())
    deny = sorted({name for outputs in _ops_of(interp, layers).values() for name in outputs})
    if not deny:
        raise EdgeeffError(f"no TFLite op belongs to {', '.join(blocks)}: cannot keep them in float")
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=tflite_representative_dataset(calibration, None),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny, fully_quantize=True))
    return debugger.get_nondebug_quantized_model()


def float_ops(path: Path, kept_layers: set[str] | None = None) -> list[str]:
    """Ops that still compute in float (by their output tensors' dtype): empty means full-integer.
    With ``kept_layers`` (the Keras layers of blocks kept in float on purpose) only the others: ops
    of those layers, and the DEQUANTIZE ops at their borders, are what was asked for."""
    module, _ = tflite_module()
    with native_stderr_muted():
        interp = module.Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    owned = _ops_of(interp, kept_layers) if kept_layers else {}
    floats = []
    for op in interp._get_ops_details():
        if any(tensors[i]["dtype"] in (np.float32, np.float16) for i in op["outputs"] if i in tensors):
            if kept_layers and (op["op_name"] == "DEQUANTIZE" or op["index"] in owned):
                continue
            floats.append(f"{op['op_name']}#{op['index']}")
    return floats


# --------------------------------------------------------------------------- running (shipped in the kit)

# What each accelerator name asks of the TFLite interpreter: a delegate library, or none (XNNPACK).
ACCELERATORS = {"cpu": None, "edgetpu": "libedgetpu.so.1"}

EDGETPU_HELP = ("install the Edge TPU runtime: Coral's apt repository, package libedgetpu1-std "
                "(https://coral.ai/docs/accelerator/get-started/)")


RUNTIME_PIP = "ai-edge-litert"
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

        placement = self.op_placement()
        executed = (f"edgetpu:{placement['edgetpu_custom_ops']} cpu:{placement['cpu_ops']}" if placement["edgetpu_custom_ops"]
                    else (self.delegate or "XNNPACK").split(" ")[0])
        return {"runtime": self.runtime, "delegate": self.delegate or "XNNPACK (default CPU delegate)", "executed_on": executed,
                "placement": placement, "input": info(self.input), "output": info(self.output)}


def open_runner(path, threads, setting, precision, prefer, batch) -> ArrayRunner:
    return TFLiteRunner(path, threads, delegate=setting, prefer=prefer)


def companion_files(path: Path) -> list[Path]:
    """Files a model file needs beside it (none: one file holds the model)."""
    return []


def graph_is_int8(path: Path) -> bool:
    """False: an int8 model of this kind declares an integer input dtype, which the runner reads."""
    return False
