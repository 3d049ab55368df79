"""Int8 recipes as data: for each int8 target and each kind of CPU arithmetic, the quantizer
settings and calibration count that convert uses unless told otherwise, with the measurement that
chose them. A row is chosen by the CPU profile of where the artifact will run (``edgeeff.devices.cpu``):
detected here, read from a device, or named with ``--for-cpu``.

Full-range int8 weights are what a CPU with int32 accumulation (VNNI, AMX, ARM dot product) wants;
on AVX2 the same weights saturate int16 pair sums, so there the recipes keep weights to 7 bits.
``FULL_RANGE`` says which option values make weights full range, so a runner meeting such an
artifact on a saturating CPU can say so in its row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeeff.devices.cpu import CpuProfile


@dataclass(frozen=True)
class Recipe:
    target: str
    int8_dot: bool  # the CPU class the row is for (edgeeff.devices.cpu.CpuProfile.int8_dot)
    options: dict = field(default_factory=dict)  # convert options (a user's own win)
    calibration_count: int = 200
    evidence: str = ""  # the results file that chose it
    why: str = ""

    def to_dict(self) -> dict:
        return {"options": dict(self.options), "calibration_count": self.calibration_count, "evidence": self.evidence}


RECIPES: tuple[Recipe, ...] = (
    Recipe("tflite-int8", False, {}, 200, "benchmarks/results/calibration_sweep.md",
           "TFLite's int8 kernels do not saturate on AVX2 (XNNPACK); agreement flat from 16 to 210 images"),
    Recipe("tflite-int8", True, {}, 200, "benchmarks/results/int8_recipes_vnni.md",
           "200 calibration images instead of 128 (measured on AVX-512 VNNI)"),
    Recipe("onnx-int8", False, {"quant_types": "u8s8-reduced"}, 200, "benchmarks/results/calibration_sweep.md",
           "u8s8/s8s8 saturate in int16 without VNNI (90-93 % agreement); 7-bit weights avoid it at int8 speed"),
    Recipe("onnx-int8", True, {"quant_types": "u8s8"}, 200, "benchmarks/results/int8_recipes_vnni.md",
           "full-range weights, the same u8s8 kernels: Lite0 on a VNNI Xeon, agreement 95.9 -> 96.6 %, logit cosine "
           "0.979 -> 0.995, top-1 drop 0.69 -> 0.00 points, as fast side by side (s8s8: as accurate, 1.8x slower)"),
    Recipe("openvino-int8", False, {"overflow_fix": "enable"}, 200, "benchmarks/results/calibration_sweep.md",
           "NNCF's overflow fix keeps every layer's weights to 7 bits, as AVX2's int16 sums need"),
    Recipe("openvino-int8", True, {"overflow_fix": "enable"}, 200, "benchmarks/results/int8_recipes_vnni.md",
           "full-range weights (first_layer_only) measured no better on a VNNI Xeon: 96.9 vs 97.2 % agreement, "
           "top-1 drop 1.38 vs 0.69 points (benchmarks/results/int8_recipes_vnni_first_layer.json)"),
)

# option -> values that give full-range weights (they saturate on a CPU without int8 dot products)
FULL_RANGE: dict[str, dict[str, tuple]] = {
    "onnx-int8": {"quant_types": ("u8s8", "s8s8")},
    "openvino-int8": {"overflow_fix": ("first_layer_only", "disable")},
}


def recipe_for(target: str, profile: CpuProfile) -> Recipe | None:
    """The recipe for an int8 target on a CPU profile (None for targets that have none: float ones)."""
    return next((r for r in RECIPES if r.target == target and r.int8_dot == profile.int8_dot), None)


def saturation_warning(target: str, options: dict, profile: CpuProfile) -> str | None:
    """Why an artifact's int8 weights lose accuracy on this CPU, or None."""
    if profile.int8_dot:
        return None
    for option, values in FULL_RANGE.get(target, {}).items():
        if options.get(option) in values:
            return (f"saturates here ({option.replace('_', '-')} {options[option]} has full-range weights; this CPU sums int8 "
                    f"pairs in int16): convert with --for-cpu {profile.name}")
    return None
