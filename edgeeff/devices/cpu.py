"""CPU profiles: what a processor's int8 arithmetic does, which decides the int8 recipe.

x86 CPUs without VNNI (AVX2) multiply u8 by s8 and sum pairs of products in int16 (``vpmaddubsw``),
which saturates when both operands use their full range: onnxruntime's u8s8/s8s8 kernels and
OpenVINO's int8 kernels then lose accuracy unless weights keep to 7 bits. AVX-512 VNNI, AVX-VNNI
and AMX sum in int32, and so do ARM's dot-product instructions: there 7-bit weights only cost
accuracy. A profile is detected from the features the kernel reports (here, or on a device through
``kit_core.probe``), named with ``--for-cpu``, or read from a device entry.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from edgeeff.errors import lookup


@dataclass(frozen=True)
class CpuProfile:
    name: str
    arch: str  # x86_64 | aarch64
    int8_dot: bool  # int8 products summed in int32 (no int16 saturation)
    description: str
    needs: tuple[str, ...] = ()  # features that identify it, all required


# Most capable first: detection takes the first profile whose features are all present.
PROFILES: dict[str, CpuProfile] = {p.name: p for p in (
    CpuProfile("amx", "x86_64", True, "x86 with AMX int8 tiles (Sapphire Rapids and later)", ("amx_int8",)),
    CpuProfile("vnni", "x86_64", True, "x86 with AVX-512 VNNI (Cascade Lake, Ice Lake, Zen 4)", ("avx512_vnni",)),
    CpuProfile("avx-vnni", "x86_64", True, "x86 with AVX-VNNI (Alder Lake, Zen 5 client)", ("avx_vnni",)),
    CpuProfile("avx2", "x86_64", False, "x86 with AVX2 and no VNNI: int8 pairs summed in int16 saturate", ("avx2",)),
    CpuProfile("x86-64", "x86_64", False, "x86 without AVX2", ()),
    CpuProfile("arm64-i8mm", "aarch64", True, "ARMv8.6 int8 matrix multiply (i8mm) and dot product", ("asimddp", "i8mm")),
    CpuProfile("arm64-dotprod", "aarch64", True, "ARMv8.2 dot product (Raspberry Pi 5, Cortex-A76)", ("asimddp",)),
    CpuProfile("arm64", "aarch64", True, "ARMv8 NEON without dot product (Raspberry Pi 4, Cortex-A72)", ()),
)}
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
# The reported features that decide int8 arithmetic, for showing a device (x86 "flags" list a hundred).
INT8_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile", "avx512_bf16",
                 "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")


def int8_features(features) -> list[str]:
    present = set(features)
    return [f for f in INT8_FEATURES if f in present]


def detect(features, machine: str) -> CpuProfile:
    """The profile of a CPU from its reported features and its machine name."""
    arch = MACHINES.get(str(machine).lower(), str(machine).lower())
    present = set(features)
    for profile in PROFILES.values():
        if profile.arch == arch and all(f in present for f in profile.needs):
            return profile
    from edgeeff.errors import EdgeeffError

    raise EdgeeffError(f"no int8 CPU profile for a {machine} CPU; name one with --for-cpu ({', '.join(PROFILES)})")


def local_profile() -> CpuProfile:
    from edgeeff.kit.probe import cpu_features

    return detect(cpu_features()[0], platform.machine())


def recipe_note(meta: dict, profile: CpuProfile | None) -> str | None:
    """What a row says when an artifact's int8 recipe is wrong for the CPU it ran on."""
    from edgeeff.quant.recipes import saturation_warning

    if profile is None or not meta.get("target"):
        return None
    return saturation_warning(meta["target"], meta.get("options") or {}, profile)


def from_probe(info: dict) -> CpuProfile | None:
    """A device's profile from its probe (``devices check``); None when the probe predates CPU features."""
    if "cpu_features" not in info or not info.get("machine"):
        return None
    from edgeeff.errors import EdgeeffError

    try:
        return detect(info["cpu_features"], info["machine"])
    except EdgeeffError:  # an architecture without int8 recipes (riscv64, ...): nothing to say about its kernels
        return None


def named(name: str) -> CpuProfile:
    return lookup(PROFILES, name, "CPU profile (--for-cpu)")
