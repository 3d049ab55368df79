"""The variant registry: every named EfficientNet as one row of data, plus custom compound scaling.

A variant is (family policy, stage table, width, depth, resolution, dropout). The family policy holds
everything that differs between EfficientNet, EfficientNet-Lite and EfficientNetV2, so the builder
has no per-family branches of its own beyond reading these fields.

Spellings accepted by :func:`resolve`:

* a registered name or alias: ``b0`` .. ``b7``, ``lite0`` .. ``lite4``, ``v2-b0`` .. ``v2-b3``,
  ``v2-s``, ``v2-m``, ``v2-l`` (also ``efficientnet-b0``, ``efficientnetb0``, ``efficientnetv2-s``...);
* ``phi=X``: EfficientNet compound scaling of B0 by ``phi`` (``-4 <= phi <= 8``):
  depth = 1.2**phi, width = 1.1**phi, resolution = 224 * 1.15**phi rounded to the nearest
  multiple of 8 (at least 32), dropout = 0.2 + 0.05 * phi clipped to [0.1, 0.5];
* any of the above followed by ``:key=value,...`` overrides of ``resolution``, ``width``,
  ``depth`` or ``dropout``, e.g. ``v2-b0:width=0.25,depth=0.25,resolution=64`` (used by the
  unit tests to build tiny networks quickly). Overridden variants are renamed to their spelling.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, replace

from edgeeff.model import blocks
from edgeeff.errors import UnknownNameError, VariantError

PHI_RANGE = (-4.0, 8.0)
RESOLUTION_RANGE = (32, 2048)
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases of the compound rule


@dataclass(frozen=True)
class FamilyPolicy:
    """What makes EfficientNet, -Lite and -V2 differ; read by the builder, never branched on by name."""

    name: str
    activation: str
    use_se: bool
    fixed_stem_head: bool  # Lite: stem 32 / head 1280 unscaled, first and last stage repeats unscaled
    shrink_guard: bool  # V1 rounds channels up when rounding would lose more than 10 %; V2 does not
    explicit_stride_padding: bool  # V1: ZeroPadding2D + "valid" for stride 2 (Keras names *_pad); V2: "same"
    depthwise_name: str  # Keras Applications: "dwconv" (V1) vs "dwconv2" (V2)
    bn_momentum: float
    bn_epsilon: float = 1e-3
    head_filters: int = 1280
    depth_divisor: int = 8


EFFICIENTNET = FamilyPolicy("efficientnet", "swish", True, False, True, True, "dwconv", 0.99)
EFFICIENTNET_LITE = FamilyPolicy("efficientnet-lite", "relu6", False, True, True, True, "dwconv", 0.99)
EFFICIENTNET_V2 = FamilyPolicy("efficientnetv2", "swish", True, False, False, False, "dwconv2", 0.9)


@dataclass(frozen=True)
class Variant:
    name: str
    family: FamilyPolicy
    stages: tuple[str, ...]
    width: float
    depth: float
    resolution: int
    dropout: float
    drop_connect: float = 0.2
    phi: float | None = None
    keras_name: str | None = None  # keras.applications constructor with the same architecture
    base: str | None = None  # the registered variant an overridden spelling started from
    # V2 training ranges (progressive learning), on the row so model and schedule cannot drift apart:
    # the paper's (min size, max size, RandAugment min, max, mixup min, max, dropout min, max), Tan &
    # Le 2021 Table 6, and google/automl effnetv2_configs.py's (train size, RandAugment, mixup,
    # dropout). Read by ``edgeeff.train.schedule``.
    paper_ranges: tuple | None = None
    official_ranges: tuple[int, float, float, float] | None = None

    @property
    def member(self) -> str:
        """The registered name this variant's weights belong to (``lite0`` for ``lite0:resolution=160``)."""
        return self.base or self.name

    @property
    def block_args(self) -> tuple[blocks.BlockArgs, ...]:
        return blocks.decode_stages(self.stages)

    def round_filters(self, filters: int) -> int:
        """Width scaling with the family's channel rounding (multiple of ``depth_divisor``)."""
        divisor = self.family.depth_divisor
        scaled = filters * self.width
        new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
        if self.family.shrink_guard and new < 0.9 * scaled:
            new += divisor
        return int(new)

    def stage_repeats(self) -> list[int]:
        """Depth scaling: ceil(depth * repeats), except Lite's first and last stage."""
        args = self.block_args
        out = []
        for i, stage in enumerate(args):
            fixed = self.family.fixed_stem_head and i in (0, len(args) - 1)
            out.append(stage.repeats if fixed else int(math.ceil(self.depth * stage.repeats)))
        return out

    def stem_filters(self) -> int:
        first = self.block_args[0].filters_in
        return first if self.family.fixed_stem_head else self.round_filters(first)

    def head_filters(self) -> int:
        head = self.family.head_filters
        return head if self.family.fixed_stem_head else self.round_filters(head)


def _v1(name, width, depth, res, dropout, keras_name=None):
    return Variant(name, EFFICIENTNET, blocks.EFFICIENTNET_B0, width, depth, res, dropout, keras_name=keras_name)


def _lite(name, width, depth, res, dropout):
    return Variant(name, EFFICIENTNET_LITE, blocks.EFFICIENTNET_B0, width, depth, res, dropout)


def _v2(name, stages, width, depth, res, dropout, keras_name, paper, official):
    return Variant(name, EFFICIENTNET_V2, stages, width, depth, res, dropout, keras_name=keras_name, paper_ranges=paper,
                   official_ranges=official)


# (width, depth, resolution, dropout): Tan & Le 2019 / Keras Applications; Lite: tensorflow/tpu
# efficientnet_lite_builder.py; V2: Keras Applications efficientnet_v2.py (= google/automl).
_TABLE: tuple[Variant, ...] = (
    _v1("b0", 1.0, 1.0, 224, 0.2, "EfficientNetB0"),
    _v1("b1", 1.0, 1.1, 240, 0.2, "EfficientNetB1"),
    _v1("b2", 1.1, 1.2, 260, 0.3, "EfficientNetB2"),
    _v1("b3", 1.2, 1.4, 300, 0.3, "EfficientNetB3"),
    _v1("b4", 1.4, 1.8, 380, 0.4, "EfficientNetB4"),
    _v1("b5", 1.6, 2.2, 456, 0.4, "EfficientNetB5"),
    _v1("b6", 1.8, 2.6, 528, 0.5, "EfficientNetB6"),
    _v1("b7", 2.0, 3.1, 600, 0.5, "EfficientNetB7"),
    _lite("lite0", 1.0, 1.0, 224, 0.2),
    _lite("lite1", 1.0, 1.1, 240, 0.2),
    _lite("lite2", 1.1, 1.2, 260, 0.3),
    _lite("lite3", 1.2, 1.4, 280, 0.3),
    _lite("lite4", 1.4, 1.8, 300, 0.3),
    # V2 (..., keras name, paper training ranges, official (train size, RandAugment, mixup))
    _v2("v2-b0", blocks.EFFICIENTNETV2_BASE, 1.0, 1.0, 224, 0.2, "EfficientNetV2B0", (128, 192, 5, 10, 0.0, 0.0, 0.1, 0.2), (192, 5, 0.0, 0.2)),
    _v2("v2-b1", blocks.EFFICIENTNETV2_BASE, 1.0, 1.1, 240, 0.2, "EfficientNetV2B1", (128, 192, 5, 10, 0.0, 0.0, 0.1, 0.2), (192, 5, 0.0, 0.2)),
    _v2("v2-b2", blocks.EFFICIENTNETV2_BASE, 1.1, 1.2, 260, 0.3, "EfficientNetV2B2", (128, 208, 5, 10, 0.0, 0.0, 0.1, 0.3), (208, 5, 0.0, 0.3)),
    _v2("v2-b3", blocks.EFFICIENTNETV2_BASE, 1.2, 1.4, 300, 0.3, "EfficientNetV2B3", (128, 240, 5, 10, 0.0, 0.0, 0.1, 0.3), (240, 5, 0.0, 0.3)),
    _v2("v2-s", blocks.EFFICIENTNETV2_S, 1.0, 1.0, 384, 0.2, "EfficientNetV2S", (128, 300, 5, 15, 0.0, 0.0, 0.1, 0.3), (300, 10, 0.0, 0.2)),
    # V2-M: Keras Applications builds it with dropout 0.2 (the row's, for Keras compatibility; tested),
    # automl trains it with 0.3 (the official schedule's). One row holds both, said once.
    _v2("v2-m", blocks.EFFICIENTNETV2_M, 1.0, 1.0, 480, 0.2, "EfficientNetV2M", (128, 380, 5, 20, 0.0, 0.2, 0.1, 0.4), (384, 15, 0.2, 0.3)),
    _v2("v2-l", blocks.EFFICIENTNETV2_L, 1.0, 1.0, 480, 0.4, "EfficientNetV2L", (128, 380, 5, 25, 0.0, 0.4, 0.1, 0.5), (384, 20, 0.5, 0.4)),
)

VARIANTS: dict[str, Variant] = {v.name: v for v in _TABLE}


def _aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in VARIANTS:
        if name.startswith("v2-"):
            suffix = name[3:]
            out.update({f"efficientnetv2-{suffix}": name, f"efficientnetv2{suffix}": name, f"v2{suffix}": name})
        else:
            out.update({f"efficientnet-{name}": name, f"efficientnet{name}": name})
    return out


ALIASES = _aliases()
_OVERRIDABLE = {"resolution": int, "width": float, "depth": float, "dropout": float}
_PHI = re.compile(r"^phi\s*=\s*(.+)$")


def list_variants() -> list[str]:
    return list(VARIANTS)


def compound(phi: float) -> Variant:
    """EfficientNet compound scaling of B0 by ``phi`` (the rule of Tan & Le 2019, section 3.3)."""
    if not (PHI_RANGE[0] <= phi <= PHI_RANGE[1]):
        raise VariantError(f"phi={phi:g} is out of range; use {PHI_RANGE[0]:g} <= phi <= {PHI_RANGE[1]:g}")
    res = max(32, int(round(224 * GAMMA**phi / 8.0)) * 8)
    dropout = min(0.5, max(0.1, 0.2 + 0.05 * phi))
    return Variant(
        f"phi={phi:g}", EFFICIENTNET, blocks.EFFICIENTNET_B0, BETA**phi, ALPHA**phi, res, round(dropout, 4), phi=phi
    )


def resolve(spec: str | Variant) -> Variant:
    """Turn a spelling (see module docstring) into a :class:`Variant`, or fail with a did-you-mean."""
    if isinstance(spec, Variant):
        return spec
    text = str(spec).strip()
    base, _, override_text = text.partition(":")
    base_key = base.strip().lower()
    phi_match = _PHI.match(base_key)
    if phi_match:
        try:
            phi = float(phi_match.group(1))
        except ValueError:
            raise VariantError(f"phi must be a number, got {phi_match.group(1)!r}") from None
        if not math.isfinite(phi):
            raise VariantError("phi must be a finite number")
        variant = compound(phi)
    else:
        key = ALIASES.get(base_key, base_key)
        if key not in VARIANTS:
            from edgeeff.model.detectors import is_detector

            if is_detector(base_key):
                raise UnknownNameError(f"{base.strip()} is a detector, and this command takes a classifier; detectors go through "
                                       "convert (with --float-blocks or --min-agreement), sensitivity, eval, bench, check and "
                                       "train-detect")
            valid = list_variants()
            close = difflib.get_close_matches(key, valid + list(ALIASES), n=1)
            hint = f" Did you mean {ALIASES.get(close[0], close[0])!r}?" if close else ""
            raise UnknownNameError(
                f"unknown variant {base.strip()!r}.{hint} Valid: {', '.join(valid)}, or phi=X (custom compound scaling)"
            )
        variant = VARIANTS[key]
    if override_text.strip():
        variant = _apply_overrides(variant, override_text, text)
    return variant


def _apply_overrides(variant: Variant, override_text: str, spelling: str) -> Variant:
    changes: dict[str, float | int] = {}
    for item in override_text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in _OVERRIDABLE:
            raise VariantError(
                f"bad override {item.strip()!r} in {spelling!r}; use key=value with key in {', '.join(_OVERRIDABLE)}"
            )
        try:
            changes[key] = _OVERRIDABLE[key](value.strip())
        except ValueError:
            raise VariantError(f"override {key} needs a number, got {value.strip()!r}") from None
    return with_changes(variant, name=spelling, base=variant.member, **changes)


def with_changes(variant: Variant, **changes) -> Variant:
    """A copy of ``variant`` with checked changes (resolution, width, depth, dropout, name)."""
    res = changes.get("resolution", variant.resolution)
    if not isinstance(res, int) or not (RESOLUTION_RANGE[0] <= res <= RESOLUTION_RANGE[1]):
        raise VariantError(
            f"resolution must be a whole number from {RESOLUTION_RANGE[0]} to {RESOLUTION_RANGE[1]}, got {res}"
        )
    for key in ("width", "depth"):
        value = changes.get(key, getattr(variant, key))
        if not (0.05 <= value <= 10.0) or not math.isfinite(value):
            raise VariantError(f"{key} multiplier must be between 0.05 and 10, got {value:g}")
    dropout = changes.get("dropout", variant.dropout)
    if not (0.0 <= dropout < 1.0):
        raise VariantError(f"dropout must be in [0, 1), got {dropout:g}")
    return replace(variant, **changes)
