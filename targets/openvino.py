"""OpenVINO: convert_model from the SavedModel, save_model (fp16 weight compression for fp16),
int8 through nncf.quantize; the runner forces f32 execution unless asked otherwise, because CPUs
with bf16 support would otherwise run an "fp32" IR in bf16."""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeeff.errors import EdgeeffError
from edgeeff.kit.core import ArrayRunner, RunnerError, np  # None without numpy: the kit's probe still loads this module
from edgeeff.targets.base import OPTIONS, TargetSpec, versions

# NNCF's overflow fix keeps weights to 7 bits so int8 kernels cannot saturate on CPUs without VNNI
# (AVX2 sums two u8*s8 products in int16). NNCF's own default fixes the first layer only; measured
# on an AVX2 CPU that costs Lite0 7 points of agreement (benchmarks/results/calibration_sweep.md).
# Which one a conversion uses is the int8 recipe's choice for the CPU it is for (edgeeff.quant.recipes);
# "enable", safe on every CPU, is only the fallback of a direct export() call without options.
# (The values of both options live in edgeeff.targets.base.OPTIONS.)


WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")


def weighted_op_names(model, ov_model) -> dict[str, list[str]]:
    """Keras layer name -> OpenVINO op names of its convolutions and matmuls (one per call: a
    detector head's shared convolution runs on five levels). The TF frontend renames ops, so they
    are matched to Keras layers by their weights (``blockmap.match_weighted_ops``), not by name; a
    matmul of two activations has no weights and no Keras layer."""
    from edgeeff.model import blockmap

    kernels = [(op, _kernel(op)) for op in ov_model.get_ordered_ops() if op.get_type_name() in WEIGHTED]
    return blockmap.match_weighted_ops(model, [(op, k) for op, k in kernels if k is not None], lambda pair: pair[1],
                                       name_of=lambda pair: pair[0].get_friendly_name())


def _kernel(op):
    """An op's constant kernel with output channels first, found upstream of its weight input through
    the nodes that only convert, reshape or (de)quantize it (NNCF's FakeQuantize, or a compressed
    model's int8 constant, zero point and scale), in the shape the op receives: Convolution (O, I,
    kH, kW), GroupConvolution (G, O/G, I/G, kH, kW), MatMul as its transpose_b says."""
    def size(node) -> int:
        shape = node.get_output_partial_shape(0)
        return math.prod(d.get_length() for d in shape) if shape.is_static else 0

    node = op.input(1).get_source_output().get_node()
    while node.get_type_name() in ("Convert", "FakeQuantize", "Reshape", "Multiply", "Subtract"):
        inputs = [i.get_source_output().get_node() for i in node.inputs()]
        # Multiply/Subtract: the weights, not the per-channel scale or zero point (the larger input)
        node = max(inputs, key=size) if node.get_type_name() in ("Multiply", "Subtract") else inputs[0]
    if node.get_type_name() != "Constant" or not op.get_input_partial_shape(1).is_static:
        return None
    w = node.get_data().reshape(tuple(op.get_input_shape(1)))
    if op.get_type_name() == "GroupConvolution":
        return w.reshape(w.shape[0] * w.shape[1], -1)
    if op.get_type_name() == "MatMul" and not op.get_attributes().get("transpose_b"):
        return w.reshape(-1, w.shape[-1]).T
    return w


def block_op_names(model, ov_model, blocks: list[str]) -> list[str]:
    """OpenVINO op names of the convolutions and matmuls of the given Keras blocks, for NNCF's IgnoredScope."""
    from edgeeff.model import blockmap

    mapping = weighted_op_names(model, ov_model)
    layers = blockmap.layers_of(model, blockmap.check_units(model, blocks))
    return [op for name, ops in mapping.items() if name in layers for op in ops]


def float_layers(model, quantized) -> list[str]:
    """Keras names of the convolutions and matmuls NNCF left unquantized: no FakeQuantize on the
    activation they read. Read from the graph, so it holds however they came to be float."""
    by_op = {op: layer for layer, ops in weighted_op_names(model, quantized).items() for op in ops}
    return list(dict.fromkeys(by_op[op.get_friendly_name()] for op in quantized.get_ordered_ops()
                              if op.get_type_name() in WEIGHTED and op.get_friendly_name() in by_op
                              and op.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize"))


def _accuracy_controlled(model, ov_model, calibration, control: dict, quantizing, common: dict):
    """NNCF's own budget search (``quantize_with_accuracy_control``): quantize everything, rank
    each quantized op by what reverting it alone recovers on the evaluation images, and revert in
    that order until the budget holds. It works per op, not per block, and ranks by the budget's
    own metric, so it can find a few cheap late-network convolutions where a block-level search
    keeps whole high-resolution blocks in float (measured, Lite1 on 397 photos: three convolutions,
    2.4 % of multiply-adds, against stem, block1a and four more, 11.6 %). ``control`` names the
    evaluation images and the budget: ``max_drop_points`` (top-1 against their labels) or
    ``min_agreement`` (top-1 agreement with this fp32 model), and ``max_reverted``, the most revert steps (one op, or a group
    NNCF reverts together) it may take before it gives up."""
    import nncf
    import numpy as np
    import openvino as ov

    from edgeeff.data.images import list_samples
    from edgeeff.evaluate import batches

    samples = list_samples(control["images"])
    resolution = model.input_shape[1]
    items = [(array[None], sample.label) for good, batch, _ in batches(samples, resolution, model.edgeeff_weights.preprocessing)
             if batch is not None for sample, array in zip(good, batch)]
    if control.get("max_drop_points") is not None:
        if any(label is None for _, label in items):
            raise EdgeeffError("accuracy control by top-1 drop needs labelled evaluation images")
        max_drop = control["max_drop_points"] / 100
    else:
        fp32 = ov.Core().compile_model(ov_model, "CPU")
        items = [(x, int(np.argmax(fp32(x)[fp32.outputs[0]]))) for x, _ in items]  # the fp32 answer is the label
        max_drop = 1.0 - control["min_agreement"]

    def top1(compiled, data) -> tuple[float, None]:
        output = compiled.outputs[0]
        return float(np.mean([np.argmax(compiled(x)[output]) == label for x, label in data])), None

    quantized = nncf.quantize_with_accuracy_control(
        ov_model, calibration, nncf.Dataset(items, lambda item: item[0]), top1, max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=quantizing,
        advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
            **({"max_num_iterations": control["max_reverted"]} if control.get("max_reverted") else {})), **common)
    floats = float_layers(model, quantized)
    return quantized, {"float_layers": floats, "images": len(items),
                       "metric": "top-1" if control.get("max_drop_points") is not None else "agreement with fp32"}


@contextmanager
def _unsplittable(path: Path):
    """The SavedModel's path as convert_model will read it: OpenVINO splits a path string at commas
    (a list of model files), so a folder under ``--out a,b`` is reached through a comma-free link."""
    if "," not in str(path):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="edgeeff-ov-") as folder:
        link = Path(folder) / "saved_model"
        link.symlink_to(Path(path).resolve(), target_is_directory=True)
        yield str(link)


def export(model, spec: TargetSpec, dest: Path, calibration=None, options: dict | None = None, saved_model: Path | None = None,
           progress=None) -> dict:
    import openvino as ov

    options = options or {}
    try:
        with _unsplittable(saved_model) as path:
            ov_model = ov.convert_model(path)
    except Exception as exc:
        raise EdgeeffError(f"OpenVINO conversion failed: {str(exc).splitlines()[0][:200]}") from None
    res = model.input_shape[1]
    ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([-1, res, res, 3])})
    details: dict = {"converter": versions("openvino")}
    if spec.precision == "int8":
        import nncf

        from edgeeff.calibration.adapters import nncf_dataset

        preset_name = options.get("preset") or "performance"
        OPTIONS["preset"].check(preset_name)
        overflow_fix = options.get("overflow_fix") or "enable"
        OPTIONS["overflow_fix"].check(overflow_fix)
        fast = options.get("fast_bias_correction")
        fast = True if fast is None else bool(fast)
        blocks = options.get("float_blocks") or []
        ignored = block_op_names(model, ov_model, blocks) if blocks else []
        common = dict(
            preset=nncf.QuantizationPreset.PERFORMANCE if preset_name == "performance" else nncf.QuantizationPreset.MIXED,
            subset_size=len(calibration),
            fast_bias_correction=fast,
            ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
        )
        quantizing = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix(overflow_fix))
        control = options.get("accuracy_control")
        if control:
            ov_model, reverted = _accuracy_controlled(model, ov_model, nncf_dataset(calibration, progress), control, quantizing, common)
            details["accuracy_control"] = reverted
        else:
            ov_model = nncf.quantize(ov_model, nncf_dataset(calibration, progress), advanced_parameters=quantizing, **common)
        details.update({"float_blocks": blocks, "float_block_ops": len(ignored), "preset": preset_name, "fast_bias_correction": fast, "overflow_fix": overflow_fix, "quantizer": versions("nncf")})
    ov.save_model(ov_model, str(dest), compress_to_fp16=spec.precision == "fp16")
    return details


# --------------------------------------------------------------------------- running (shipped in the kit)

RUNTIME_PIP = "openvino"

# What each accelerator name asks of OpenVINO: a device plugin.
ACCELERATORS = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}


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


def executed_precision(hint: str | None, layers: dict) -> str | None:
    """One phrase for a bench row: "int8 (rest f32)", "int8 41/50 (rest f32)", or the hint: the
    precision hint governs only the float ops, the layer counts say what the plugin really ran."""
    integer = sum(n for p, n in layers.items() if p in ("u8", "i8"))
    if not integer:
        return hint
    total = sum(layers.values())
    share = "" if integer == total else f" {integer}/{total}"
    return f"int8{share} (rest {hint})" if hint else f"int8{share}"


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
        devices = list(self.compiled.get_property("EXECUTION_DEVICES"))
        hint = _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        layers = _layer_precisions(self.compiled)
        return {
            "runtime": "openvino",
            "device": self.device,
            "execution_devices": devices,
            "executed_on": ",".join(devices),
            "inference_precision": hint,
            "layer_precisions": layers,
            "executed_precision": executed_precision(hint, layers),
            "input": {"name": self.compiled.inputs[0].get_any_name(), "shape": str(self._shape),
                      "compiled_for_batch": sorted(self._compiled_for)},
            "output": {"name": self.compiled.outputs[0].get_any_name(), "shape": str(self._out_shape)},
        }


def open_runner(path, threads, setting, precision, prefer, batch) -> ArrayRunner:
    return OpenVINORunner(path, threads or (os.cpu_count() if setting == "CPU" else None), device=setting, precision_hint=precision,
                          batch=batch)


def companion_files(path: Path) -> list[Path]:
    """An IR's weights file, which must sit beside its ``.xml``."""
    weights = Path(path).with_suffix(".bin")
    if not weights.is_file():
        raise EdgeeffError(f"{Path(path).name} needs its weights file {weights.name} beside it")
    return [weights]


def graph_is_int8(path: Path) -> bool:
    """NNCF's int8 IRs keep float input and mark quantization with FakeQuantize (or i8/u8 constants)."""
    text = Path(path).read_text(errors="replace")
    return 'type="FakeQuantize"' in text or 'element_type="i8"' in text or 'element_type="u8"' in text
