"""ONNX: tf2onnx from the Keras model (explicit input signature, opset 17), static QDQ int8 through
onnxruntime.quantization, run under onnxruntime."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from edgeeff.errors import EdgeeffError
from edgeeff.targets.base import ArrayRunner, TargetSpec, versions

OPSET = 17
INPUT_NAME = "image"
METHODS = ("minmax", "entropy", "percentile")


def _to_onnx(model, dest: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    res = model.input_shape[1]
    spec = (tf.TensorSpec((None, res, res, 3), tf.float32, name=INPUT_NAME),)
    fn = tf.function(lambda x: model(x, training=False))
    try:
        tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET, output_path=str(dest))
    except Exception as exc:
        raise EdgeeffError(f"tf2onnx conversion failed: {str(exc).splitlines()[0][:200]}") from None


def export(model, spec: TargetSpec, dest: Path, calibration=None, options: dict | None = None, saved_model: Path | None = None) -> dict:
    options = options or {}
    if spec.precision == "fp32":
        _to_onnx(model, dest)
        return {"opset": OPSET, "converter": versions("tf2onnx", "onnx"), "runtime": versions("onnxruntime|onnxruntime-gpu")}
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeeff.calibration.adapters import ort_reader

    method = options.get("calibration_method") or "minmax"
    if method not in METHODS:
        raise EdgeeffError(f"--calibration-method must be one of {', '.join(METHODS)}, got {method!r}")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        pre = Path(tmp) / "pre.onnx"
        _to_onnx(model, fp32)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(dest),
            ort_reader(calibration, INPUT_NAME, options.get("progress")),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            extra_options={"CalibMovingAverage": False},
        )
    return {
        "opset": OPSET,
        "quant_format": "QDQ",
        "activations": "uint8 (asymmetric)",
        "weights": "int8 per-channel",
        "calibration_method": method,
        "converter": versions("tf2onnx", "onnx"),
        "runtime": versions("onnxruntime|onnxruntime-gpu"),
    }


class OnnxRunner(ArrayRunner):
    def __init__(self, path: Path, threads: int | None = None, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:
            raise EdgeeffError(f"cannot load {Path(path).name} as an ONNX model: {str(exc).splitlines()[0][:160]}") from None
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]

    def invoke(self, prepared: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input.name: prepared})[0]

    def describe(self) -> dict:
        return {
            "runtime": "onnxruntime",
            "providers": self.session.get_providers(),
            "input": {"name": self.input.name, "shape": list(self.input.shape), "dtype": self.input.type},
            "output": {"name": self.output.name, "shape": list(self.output.shape), "dtype": self.output.type},
        }


def load(path: Path, spec: TargetSpec, threads: int | None = None) -> OnnxRunner:
    return OnnxRunner(Path(path), threads)
