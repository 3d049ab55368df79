"""OpenVINO: convert_model from the SavedModel, save_model (fp16 weight compression for fp16),
int8 through nncf.quantize; the runner forces f32 execution unless asked otherwise, because CPUs
with bf16 support would otherwise run an "fp32" IR in bf16."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeeff.errors import EdgeeffError
from edgeeff.targets.base import ArrayRunner, TargetSpec, versions

PRESETS = ("performance", "mixed")
# NNCF's overflow fix keeps weights to 7 bits so int8 kernels cannot saturate on CPUs without VNNI
# (AVX2 sums two u8*s8 products in int16). NNCF's own default fixes the first layer only; measured
# on an AVX2 CPU that costs Lite0 7 points of agreement (benchmarks/results/calibration_sweep.md),
# and an artifact may run on any CPU, so the default here fixes every layer.
OVERFLOW_FIX = ("enable", "first_layer_only", "disable")


def export(model, spec: TargetSpec, dest: Path, calibration=None, options: dict | None = None, saved_model: Path | None = None,
           progress=None) -> dict:
    import openvino as ov

    options = options or {}
    try:
        ov_model = ov.convert_model(str(saved_model))
    except Exception as exc:
        raise EdgeeffError(f"OpenVINO conversion failed: {str(exc).splitlines()[0][:200]}") from None
    res = model.input_shape[1]
    ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([-1, res, res, 3])})
    details: dict = {"converter": versions("openvino")}
    if spec.precision == "int8":
        import nncf

        from edgeeff.calibration.adapters import nncf_dataset

        preset_name = options.get("preset") or "performance"
        if preset_name not in PRESETS:
            raise EdgeeffError(f"--preset must be one of {', '.join(PRESETS)}, got {preset_name!r}")
        overflow_fix = options.get("overflow_fix") or "enable"
        if overflow_fix not in OVERFLOW_FIX:
            raise EdgeeffError(f"--overflow-fix must be one of {', '.join(OVERFLOW_FIX)}, got {overflow_fix!r}")
        fast = options.get("fast_bias_correction")
        fast = True if fast is None else bool(fast)
        ov_model = nncf.quantize(
            ov_model,
            nncf_dataset(calibration, progress),
            preset=nncf.QuantizationPreset.PERFORMANCE if preset_name == "performance" else nncf.QuantizationPreset.MIXED,
            subset_size=len(calibration),
            fast_bias_correction=fast,
            advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix(overflow_fix)),
        )
        details.update({"preset": preset_name, "fast_bias_correction": fast, "overflow_fix": overflow_fix, "quantizer": versions("nncf")})
    ov.save_model(ov_model, str(dest), compress_to_fp16=spec.precision == "fp16")
    return details


def _type_name(value) -> str:
    """OpenVINO element types print as "<Type: 'float32'>"; their short names are what users set."""
    return value.to_string() if hasattr(value, "to_string") else str(value)


class OpenVINORunner(ArrayRunner):
    def __init__(self, path: Path, threads: int | None = None, device: str = "CPU", precision_hint: str | None = "f32") -> None:
        import openvino as ov

        core = ov.Core()
        config = {}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if precision_hint:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        try:
            self.compiled = core.compile_model(str(path), device, config)
        except Exception as exc:
            raise EdgeeffError(f"cannot load {Path(path).name} with OpenVINO {device}: {str(exc).splitlines()[0][:160]}") from None
        self.request = self.compiled.create_infer_request()
        self.device = device

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        """Bind the batch to the request's input without a copy (as benchmark_app does)."""
        import openvino as ov

        prepared = np.ascontiguousarray(batch, dtype=np.float32)
        self.request.set_input_tensor(ov.Tensor(prepared, shared_memory=True))
        self._bound = prepared  # keep the shared buffer alive while it is bound
        return prepared

    def invoke(self, prepared: np.ndarray) -> np.ndarray:
        self.request.infer()
        return self.request.get_output_tensor(0).data

    def finish(self, raw: np.ndarray) -> np.ndarray:
        return np.array(raw, dtype=np.float32, copy=True)  # the output buffer is reused by the next infer

    def describe(self) -> dict:
        return {
            "runtime": "openvino",
            "device": self.device,
            "execution_devices": list(self.compiled.get_property("EXECUTION_DEVICES")),
            "inference_precision": _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
            "input": {"name": self.compiled.inputs[0].get_any_name(), "shape": str(self.compiled.inputs[0].get_partial_shape())},
            "output": {"name": self.compiled.outputs[0].get_any_name(), "shape": str(self.compiled.outputs[0].get_partial_shape())},
        }


def load(path: Path, spec: TargetSpec, threads: int | None = None, device: str = "cpu", precision: str | None = "f32") -> OpenVINORunner:
    """``device``: "cpu", "gpu" (OpenVINO's GPU plugin) or "npu". ``precision`` is the
    INFERENCE_PRECISION_HINT: "f32" (default, so fp32 means fp32), or None for the plugin's own
    choice (bf16 on CPUs with AVX512-BF16/AMX)."""
    import openvino as ov

    plugin = device.upper()
    if plugin != "CPU" and plugin not in ov.Core().available_devices:
        raise EdgeeffError(f"OpenVINO has no {plugin} device here (available: {', '.join(ov.Core().available_devices)})")
    return OpenVINORunner(Path(path), threads or (os.cpu_count() if plugin == "CPU" else None), device=plugin, precision_hint=precision)
