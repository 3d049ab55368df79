"""OpenVINO: convert_model from the SavedModel, save_model (fp16 weight compression for fp16),
int8 through nncf.quantize; the runner forces f32 execution unless asked otherwise, because CPUs
with bf16 support would otherwise run an "fp32" IR in bf16."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from edgeeff.errors import EdgeeffError
from edgeeff.targets.base import TargetSpec, versions

PRESETS = ("performance", "mixed")
# NNCF's overflow fix keeps weights to 7 bits so int8 kernels cannot saturate on CPUs without VNNI
# (AVX2 sums two u8*s8 products in int16). NNCF's own default fixes the first layer only; measured
# on an AVX2 CPU that costs Lite0 7 points of agreement (benchmarks/results/calibration_sweep.md).
# Which one a conversion uses is the int8 recipe's choice for the CPU it is for (edgeeff.quant.recipes);
# "enable", safe on every CPU, is only the fallback of a direct export() call without options.
OVERFLOW_FIX = ("enable", "first_layer_only", "disable")


WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")


def weighted_op_names(model, ov_model) -> dict[str, str]:
    """Keras layer name -> OpenVINO op name of every convolution and matmul. The TF frontend renames
    ops, so they are matched to Keras layers by order and output channels
    (``blockmap.match_weighted_ops``), not by name."""
    from edgeeff.model import blockmap

    ops = [op for op in ov_model.get_ordered_ops() if op.get_type_name() in WEIGHTED]

    def channels(op):
        shape = op.get_output_partial_shape(0)
        dim = shape[-1] if op.get_type_name() == "MatMul" else shape[1]
        return dim.get_length() if dim.is_static else None

    return blockmap.match_weighted_ops(model, ops, channels, name_of=lambda op: op.get_friendly_name())


def block_op_names(model, ov_model, blocks: list[str]) -> list[str]:
    """OpenVINO op names of the convolutions and matmuls of the given Keras blocks, for NNCF's IgnoredScope."""
    from edgeeff.model import blockmap

    mapping = weighted_op_names(model, ov_model)
    layers = blockmap.layers_of(model, blockmap.check_units(model, blocks))
    return [mapping[name] for name in mapping if name in layers]


def float_layers(model, quantized) -> list[str]:
    """Keras names of the convolutions and matmuls NNCF left unquantized: no FakeQuantize on the
    activation they read. Read from the graph, so it holds however they came to be float."""
    by_op = {op: layer for layer, op in weighted_op_names(model, quantized).items()}
    return [by_op[op.get_friendly_name()] for op in quantized.get_ordered_ops()
            if op.get_type_name() in WEIGHTED and op.get_friendly_name() in by_op
            and op.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize"]


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
        if preset_name not in PRESETS:
            raise EdgeeffError(f"--preset must be one of {', '.join(PRESETS)}, got {preset_name!r}")
        overflow_fix = options.get("overflow_fix") or "enable"
        if overflow_fix not in OVERFLOW_FIX:
            raise EdgeeffError(f"--overflow-fix must be one of {', '.join(OVERFLOW_FIX)}, got {overflow_fix!r}")
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
