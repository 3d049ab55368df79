"""TensorFlow Lite: export through a SavedModel (the robust route with Keras 3), run under
ai-edge-litert, falling back to tflite-runtime."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeeff.errors import EdgeeffError
from edgeeff.quiet import native_stderr_muted
from edgeeff.targets.base import ArrayRunner, TargetSpec, versions


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, "tflite-runtime"


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
    try:
        with native_stderr_muted():
            flat = converter.convert()
    except Exception as exc:
        raise EdgeeffError(f"TFLite conversion failed: {str(exc).splitlines()[0][:200]}") from None
    dest.write_bytes(flat)
    details = {"runtime": versions("ai-edge-litert|tflite-runtime"), "converter": versions("tensorflow-cpu|tensorflow")}
    if spec.precision == "int8":
        details["float_ops"] = float_ops(dest)
        details["fully_integer"] = not details["float_ops"]
    return details


def float_ops(path: Path) -> list[str]:
    """Ops that still compute in float (by their output tensors' dtype): empty means full-integer."""
    Interpreter, _ = _interpreter_class()
    with native_stderr_muted():
        interp = Interpreter(model_path=str(path))
    dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    floats = []
    for op in interp._get_ops_details():  # the interpreter's own op table; no public equivalent
        if any(dtypes.get(i) in (np.float32, np.float16) for i in op["outputs"]):
            floats.append(f"{op['op_name']}#{op['index']}")
    return floats


class TFLiteRunner(ArrayRunner):
    def __init__(self, path: Path, threads: int | None = None) -> None:
        Interpreter, self.runtime = _interpreter_class()
        try:
            with native_stderr_muted():
                self.interp = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
        except (ValueError, RuntimeError) as exc:
            raise EdgeeffError(f"cannot load {path.name} as a TFLite model: {str(exc).splitlines()[0][:160]}") from None
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

    def prepare(self, batch: np.ndarray) -> np.ndarray:
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

    def invoke(self, prepared: np.ndarray) -> np.ndarray:
        self.interp.invoke()
        return self.interp.get_tensor(self.output["index"])

    def finish(self, raw: np.ndarray) -> np.ndarray:
        if self.output["dtype"] in (np.int8, np.uint8):
            scale, zero = self.output["quantization"]
            return (raw.astype(np.float32) - zero) * scale
        return raw.astype(np.float32)

    def describe(self) -> dict:
        def info(d):
            return {"name": d["name"], "shape": [int(v) for v in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name,
                    "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}

        return {"runtime": self.runtime, "input": info(self.input), "output": info(self.output)}


def load(path: Path, spec: TargetSpec, threads: int | None = None, device: str = "cpu", precision: str | None = None) -> TFLiteRunner:
    """``device``: only "cpu"; the pip builds of LiteRT for desktop Linux ship no GPU delegate."""
    if device != "cpu":
        raise EdgeeffError(f"TFLite targets run on the CPU here: ai-edge-litert's desktop wheels have no {device.upper()} delegate")
    return TFLiteRunner(Path(path), threads)
