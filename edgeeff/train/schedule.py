"""Progressive learning (EfficientNetV2, Tan & Le 2021, section 4): schedules as data, one pure planner.

Early stages train on small images with weak regularisation, later stages on larger images with
stronger regularisation, all changed together stage by stage. A schedule is a row of ranges per
variant; :func:`stage_plan` turns (variant, stages, epochs, schedule, overrides) into one
:class:`StageSettings` per stage. Nothing here imports TensorFlow, so the table is testable alone.

Two named schedules:

* ``paper`` (the default): the ranges of the paper's Table 6, every setting interpolated linearly
  from its minimum at the first stage to its maximum at the last stage. It is the default because
  it is the recipe the paper reports results for, and it schedules all four settings (size,
  RandAugment, mixup, dropout) as the paper describes.
* ``official``: what google/automl ``efficientnetv2/main.py`` does with ``--train.stages``: the
  size starts from half the final training size and stage ``i`` ends at ``(i+1)/stages`` of the
  way (so even the first stage is above half), RandAugment goes ``linspace(5, ram, stages)``,
  mixup ``linspace(0, mixup, stages)``, and dropout is *not* scheduled (the variant's rate
  throughout). Final training sizes and magnitudes are the automl config's
  (``effnetv2_configs.py``): S 300 / 10 / 0 / 0.2, M 384 / 15 / 0.2 / 0.3, L 384 / 20 / 0.5 / 0.4.

B0-B3 (not in the paper's table; our choice, documented here): ``paper`` goes from 128 px to the
automl training size (192, 192, 208, 240), RandAugment 5 -> 10, no mixup, dropout 0.1 -> the
variant's rate. ``official`` uses the automl sizes with the half-size start; automl trains these
with AutoAugment, which has no magnitude, so RandAugment stays at 5.

EfficientNet V1 and Lite rows (for fine-tuning, e.g. Lite0 with real weights) get a generic row:
half the variant's resolution up to the full one, RandAugment 5 -> 10, no mixup, dropout 0.1 ->
the variant's rate, sizes rounded to multiples of 32 because their explicit stride-2 padding is
exact only for sizes divisible by 32.

Sizes: the two ends are kept exactly as given; sizes in between are the linear interpolation
rounded to the nearest multiple of ``multiple`` (8 by default; automl truncates to an integer).
Epochs: stage ``i`` covers ``[int(i * epochs / stages), int((i + 1) * epochs / stages))``, as in
automl, so stages differ by at most one epoch.

RandAugment magnitude is on the RandAugment paper's scale, where the EfficientNetV2 paper's
5-25 live; Keras's ``RandAugment(factor=...)`` takes a 0-1 strength, so the pipeline passes
``factor = magnitude / MAGNITUDE_SCALE`` with ``MAGNITUDE_SCALE = 30`` (the largest magnitude the
RandAugment paper searched; L's 25 maps to 0.83).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from edgeeff.errors import EdgeeffError
from edgeeff.model.variants import VARIANTS, RESOLUTION_RANGE, Variant, resolve

MAGNITUDE_SCALE = 30.0


class ScheduleError(EdgeeffError):
    """A schedule request that cannot be planned (unknown key, min above max, too many stages)."""


@dataclass(frozen=True)
class ScheduleRow:
    """The ends of every scheduled setting for one variant under one named schedule."""

    min_size: int
    max_size: int
    min_magnitude: float
    max_magnitude: float
    min_mixup: float
    max_mixup: float
    min_dropout: float
    max_dropout: float
    multiple: int = 8
    size_at_stage_end: bool = False  # automl: stage i uses ratio (i+1)/stages, not i/(stages-1)


@dataclass(frozen=True)
class StageSettings:
    """What one stage trains with; ``epochs`` is ``[first_epoch, end_epoch)`` (0-based)."""

    stage: int
    first_epoch: int
    end_epoch: int
    image_size: int
    magnitude: float
    mixup: float
    dropout: float

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.first_epoch

    def to_dict(self) -> dict:
        return {**asdict(self), "epochs": self.epochs}


# Both schedules are read from the variant rows (edgeeff.model.variants: paper_ranges, official_ranges):
# one table, so the model's dropout and the schedule's cannot drift apart. The official schedule's
# size starts at half the training size and its dropout is fixed (automl does not schedule it).
SCHEDULES: dict[str, dict[str, ScheduleRow]] = {
    "paper": {v.name: ScheduleRow(*v.paper_ranges) for v in VARIANTS.values() if v.paper_ranges},
    "official": {
        v.name: ScheduleRow(size // 2, size, 5, ram, 0.0, mix, drop, drop, size_at_stage_end=True)
        for v in VARIANTS.values() if v.official_ranges for size, ram, mix, drop in [v.official_ranges]
    },
}
DEFAULT_SCHEDULE = "paper"
OVERRIDE_KEYS = tuple(ScheduleRow.__dataclass_fields__)[:-1]  # every field but the stage-end rule


def list_schedules() -> list[str]:
    return list(SCHEDULES)


def schedule_row(variant: Variant, schedule: str = DEFAULT_SCHEDULE) -> ScheduleRow:
    """The named schedule's row for ``variant`` (by its registered member; generic for V1/Lite)."""
    if schedule not in SCHEDULES:
        raise ScheduleError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    row = SCHEDULES[schedule].get(variant.member)
    if row is not None:
        return row
    if variant.family.name == "efficientnetv2":  # a V2 spelling without a row cannot occur today
        raise ScheduleError(f"no {schedule} schedule for {variant.name}")
    low = max(RESOLUTION_RANGE[0], int(round(variant.resolution / 2 / 32)) * 32)
    official = schedule == "official"  # automl does not schedule dropout
    return ScheduleRow(low, variant.resolution, 5, 10, 0.0, 0.0, variant.dropout if official else min(0.1, variant.dropout),
                       variant.dropout, multiple=32, size_at_stage_end=official)


def _apply(row: ScheduleRow, overrides: dict) -> ScheduleRow:
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise ScheduleError(f"unknown schedule key(s) {', '.join(unknown)}; valid: {', '.join(OVERRIDE_KEYS)}")
    changes = {}
    for key, value in overrides.items():
        kind = int if key in ("min_size", "max_size", "multiple") else float
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ScheduleError(f"schedule key {key} needs a {'whole ' if kind is int else ''}number, got {value!r}") from None
        if kind is int and number != float(value):
            raise ScheduleError(f"schedule key {key} needs a whole number, got {value!r}")
        changes[key] = number
    return replace(row, **changes)


def _check(row: ScheduleRow) -> None:
    lo, hi = RESOLUTION_RANGE
    for name in ("size", "magnitude", "mixup", "dropout"):
        low, high = getattr(row, f"min_{name}"), getattr(row, f"max_{name}")
        if low > high:
            raise ScheduleError(f"min {name} {low:g} is above max {name} {high:g}")
    if not (lo <= row.min_size and row.max_size <= hi):
        raise ScheduleError(f"image sizes must be from {lo} to {hi}, got {row.min_size}-{row.max_size}")
    if not (0 <= row.min_magnitude and row.max_magnitude <= MAGNITUDE_SCALE):
        raise ScheduleError(f"RandAugment magnitude must be from 0 to {MAGNITUDE_SCALE:g}")
    if not (0 <= row.min_mixup and row.max_mixup <= 1):
        raise ScheduleError("mixup alpha must be from 0 to 1")
    if not (0 <= row.min_dropout and row.max_dropout < 1):
        raise ScheduleError("dropout must be in [0, 1)")
    if not 1 <= row.multiple <= 64:
        raise ScheduleError(f"size multiple must be from 1 to 64, got {row.multiple}")


def _lerp(low: float, high: float, ratio: float) -> float:
    return low + (high - low) * ratio


def _round_size(size: float, row: ScheduleRow) -> int:
    """Nearest multiple of ``row.multiple``, kept inside the row's ends (which stay exact)."""
    if size <= row.min_size or size >= row.max_size:
        return int(min(max(size, row.min_size), row.max_size))
    rounded = int(round(size / row.multiple)) * row.multiple
    return min(max(rounded, row.min_size), row.max_size)


def stage_plan(variant: str | Variant, stages: int, epochs: int, schedule: str = DEFAULT_SCHEDULE,
               overrides: dict | None = None) -> list[StageSettings]:
    """Per-stage settings for progressive learning: a pure function of its arguments.

    ``overrides`` replaces any of :data:`OVERRIDE_KEYS` (``min_size``, ``max_size``,
    ``min_magnitude`` ... ``multiple``); unknown keys are refused. ``stages=1`` trains at the
    maximum of every range (fixed-size training).
    """
    v = resolve(variant)
    if stages < 1:
        raise ScheduleError(f"--stages must be at least 1, got {stages}")
    if epochs < 1:
        raise ScheduleError(f"--epochs must be at least 1, got {epochs}")
    if stages > epochs:
        raise ScheduleError(f"{stages} stages need at least {stages} epochs, got {epochs}; lower --stages or raise --epochs")
    row = _apply(schedule_row(v, schedule), overrides or {})
    _check(row)
    plan = []
    for i in range(stages):
        even = i / (stages - 1) if stages > 1 else 1.0  # linspace over the stages, ends included
        size_ratio = (i + 1) / stages if row.size_at_stage_end else even
        plan.append(StageSettings(
            stage=i,
            first_epoch=int(i * epochs / stages),
            end_epoch=int((i + 1) * epochs / stages),
            image_size=_round_size(_lerp(row.min_size, row.max_size, size_ratio), row),
            magnitude=round(_lerp(row.min_magnitude, row.max_magnitude, even), 4),
            mixup=round(_lerp(row.min_mixup, row.max_mixup, even), 4),
            dropout=round(_lerp(row.min_dropout, row.max_dropout, even), 4),
        ))
    return plan

