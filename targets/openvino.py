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
# on an AVX2 CPU that costs Lite0 7 points of agreement (benchmarks/results/calibration_sweep.md),
# and an artifact may run on any CPU, so the default here fixes every layer.
OVERFLOW_FIX = ("enable", "first_layer_only", "disable")


def block_op_names(model, ov_model, blocks: list[str]) -> list[str]:
    """OpenVINO op names of the convolutions and matmuls of the given Keras blocks, for NNCF's
    IgnoredScope. The TF frontend renames ops, so they are matched to Keras layers by order and
    output channels (``blockmap.match_weighted_ops``), not by name."""
    from edgeeff import blockmap

    ops = [op for op in ov_model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")]

    def channels(op):
        shape = op.get_output_partial_shape(0)
        dim = shape[-1] if op.get_type_name() == "MatMul" else shape[1]
        return dim.get_length() if dim.is_static else None

    mapping = blockmap.match_weighted_ops(model, ops, channels, name_of=lambda op: op.get_friendly_name())
    layers = blockmap.layers_of(model, blockmap.check_units(model, blocks))
    return [mapping[name] for name in mapping if name in layers]


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
        ov_model = nncf.quantize(
            ov_model,
            nncf_dataset(calibration, progress),
            preset=nncf.QuantizationPreset.PERFORMANCE if preset_name == "performance" else nncf.QuantizationPreset.MIXED,
            subset_size=len(calibration),
            fast_bias_correction=fast,
            ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
            advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix(overflow_fix)),
        )
        details.update({"float_blocks": blocks, "float_block_ops": len(ignored), "preset": preset_name, "fast_bias_correction": fast, "overflow_fix": overflow_fix, "quantizer": versions("nncf")})
    ov.save_model(ov_model, str(dest), compress_to_fp16=spec.precision == "fp16")
    return details
