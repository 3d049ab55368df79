"""Block notation: one compact string per stage, decoded by one function and encoded back by another.

The notation is the one the official TensorFlow builders use (``r2_k3_s2_e6_i16_o24_se0.25``), so a
stage table here reads like the papers' tables and like ``tensorflow/tpu`` and ``google/automl``:

==========  ====================================================================
``r``       repeats of the block in the stage (before depth scaling)
``k``       depthwise (or fused) kernel size
``s``       stride of the first block of the stage
``e``       expansion ratio
``i``/``o`` input / output channels (before width scaling)
``se``      squeeze-excitation ratio, relative to the block's *input* channels
``c1``      Fused-MBConv (EfficientNetV2); absent means MBConv
``noskip``  no identity shortcut
==========  ====================================================================

Encoding is canonical (fixed field order, SE and ``c1`` only when set), so
``encode(decode(s)) == s`` for every canonical string and ``decode(encode(b)) == b`` for every block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeeff.errors import VariantError

_FIELD = re.compile(r"^(noskip|se|r|k|s|e|i|o|c)(.*)$")


@dataclass(frozen=True)
class BlockArgs:
    """One stage of the network, before width/depth scaling."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int
    se_ratio: float = 0.0
    fused: bool = False
    id_skip: bool = True


def decode(text: str) -> BlockArgs:
    """Parse one stage string; raise ``VariantError`` naming the bad field."""
    fields: dict[str, str] = {}
    for part in text.strip().split("_"):
        match = _FIELD.match(part)
        if not match:
            raise VariantError(f"bad block field {part!r} in {text!r}")
        key, value = match.groups()
        if key in fields:
            raise VariantError(f"block field {key!r} given twice in {text!r}")
        fields[key] = value
    missing = [k for k in ("r", "k", "s", "e", "i", "o") if k not in fields]
    if missing:
        raise VariantError(f"block {text!r} lacks field(s) {', '.join(missing)}")
    try:
        return BlockArgs(
            repeats=int(fields["r"]),
            kernel=int(fields["k"]),
            stride=int(fields["s"]),
            expand=int(fields["e"]),
            filters_in=int(fields["i"]),
            filters_out=int(fields["o"]),
            se_ratio=float(fields.get("se", "0")),
            fused=fields.get("c", "0") == "1",
            id_skip="noskip" not in fields,
        )
    except ValueError as exc:
        raise VariantError(f"bad number in block {text!r}: {exc}") from None


def encode(block: BlockArgs) -> str:
    """Inverse of :func:`decode`, in canonical field order."""
    parts = [
        f"r{block.repeats}",
        f"k{block.kernel}",
        f"s{block.stride}",
        f"e{block.expand}",
        f"i{block.filters_in}",
        f"o{block.filters_out}",
    ]
    if block.se_ratio:
        parts.append(f"se{block.se_ratio:g}")
    if block.fused:
        parts.append("c1")
    if not block.id_skip:
        parts.append("noskip")
    return "_".join(parts)


def decode_stages(stages: tuple[str, ...] | list[str]) -> tuple[BlockArgs, ...]:
    return tuple(decode(s) for s in stages)


# --- Stage tables -----------------------------------------------------------------------------
# EfficientNet-B0 (Tan & Le 2019, Table 1); Lite uses the same table with SE switched off by its
# family policy rather than by editing the strings.
EFFICIENTNET_B0 = (
    "r1_k3_s1_e1_i32_o16_se0.25",
    "r2_k3_s2_e6_i16_o24_se0.25",
    "r2_k5_s2_e6_i24_o40_se0.25",
    "r3_k3_s2_e6_i40_o80_se0.25",
    "r3_k5_s1_e6_i80_o112_se0.25",
    "r4_k5_s2_e6_i112_o192_se0.25",
    "r1_k3_s1_e6_i192_o320_se0.25",
)

# EfficientNetV2 (Tan & Le 2021, Table 4 and google/automl effnetv2_configs.py).
EFFICIENTNETV2_BASE = (
    "r1_k3_s1_e1_i32_o16_c1",
    "r2_k3_s2_e4_i16_o32_c1",
    "r2_k3_s2_e4_i32_o48_c1",
    "r3_k3_s2_e4_i48_o96_se0.25",
    "r5_k3_s1_e6_i96_o112_se0.25",
    "r8_k3_s2_e6_i112_o192_se0.25",
)
EFFICIENTNETV2_S = (
    "r2_k3_s1_e1_i24_o24_c1",
    "r4_k3_s2_e4_i24_o48_c1",
    "r4_k3_s2_e4_i48_o64_c1",
    "r6_k3_s2_e4_i64_o128_se0.25",
    "r9_k3_s1_e6_i128_o160_se0.25",
    "r15_k3_s2_e6_i160_o256_se0.25",
)
EFFICIENTNETV2_M = (
    "r3_k3_s1_e1_i24_o24_c1",
    "r5_k3_s2_e4_i24_o48_c1",
    "r5_k3_s2_e4_i48_o80_c1",
    "r7_k3_s2_e4_i80_o160_se0.25",
    "r14_k3_s1_e6_i160_o176_se0.25",
    "r18_k3_s2_e6_i176_o304_se0.25",
    "r5_k3_s1_e6_i304_o512_se0.25",
)
EFFICIENTNETV2_L = (
    "r4_k3_s1_e1_i32_o32_c1",
    "r7_k3_s2_e4_i32_o64_c1",
    "r7_k3_s2_e4_i64_o96_c1",
    "r10_k3_s2_e4_i96_o192_se0.25",
    "r19_k3_s1_e6_i192_o224_se0.25",
    "r25_k3_s2_e6_i224_o384_se0.25",
    "r7_k3_s1_e6_i384_o640_se0.25",
)
