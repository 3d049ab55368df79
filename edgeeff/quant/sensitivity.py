"""Which blocks of EfficientNet suffer from int8, the same way on every backend (the budget search
that keeps the fewest in float lives in ``edgeeff.quant.budget``).

Both questions are answered with real conversions: each trial is an ordinary ``convert()`` of the
target with the conversion option ``float_blocks`` (each backend turns it into its own form:
onnxruntime ``nodes_to_exclude``, NNCF ``IgnoredScope``, the TFLite quantization debugger's
deny-list), validated against the Keras fp32 model on the evaluation images. Trials live in a
temporary folder; only the chosen artifact is published.

* ``sensitivity``: per unit (``edgeeff.model.blockmap``), ``keep-float`` (everything int8 but this unit:
  the error it removes) or ``quantize-alone`` (only this unit int8: the error it causes), with
  top-1 agreement, mean cosine and SNR of the logits against fp32; for a detector (its BiFPN cells
  and heads are units too), the mAP against the fp32 detector's boxes, the class logits' cosine and
  the raw output's SNR (:func:`validation_figures`).
* ``edgeeff.quant.budget.BudgetSearch``: plain int8 first; if it misses the budget, the target's latency-free
  calibration settings (``TargetSpec.budget_settings``), then the backend's own per-op search
  where it has one (NNCF's accuracy control), then units kept in float in order of
  sensitivity until the budget holds, then each is tried back in int8 (costliest first) and left
  out of the float set if the budget still holds, then an int8 block between float neighbours (or
  between float and the network's input or output) is tried in float and kept if that runs faster,
  then each block left is tried as one of its convolutions alone; the latency of each step is
  measured.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from edgeeff.errors import EdgeeffError

Say = Callable[..., None]
MODES = ("keep-float", "quantize-alone")


class BudgetError(EdgeeffError):
    """The budget cannot be met or cannot be measured; nothing was published."""


def validation_figures(meta: dict) -> dict:
    """A trial's scores from its conversion metadata, as sensitivity, budget and sweep rows carry them:
    a classifier's top-1 agreement (and drop, with labels), logit cosine and SNR; a detector's
    (``meta["task"] == "detect"``) from :func:`edgeeff.detect.trial_figures`."""
    v = meta["validation"]
    if meta.get("task") == "detect":
        from edgeeff.detect import trial_figures

        return trial_figures(v)
    row = {"agreement": v["top1_agreement"], "cosine": v["mean_cosine"], "snr_db": v.get("snr_db"), "images": v["images"]}
    if "top1_artifact" in v:
        row.update({"top1": v["top1_artifact"], "top1_fp32": v["top1_keras"], "drop_points": (v["top1_keras"] - v["top1_artifact"]) * 100})
        if "top1_drop_paired" in v:
            row["drop_ci95_points"] = v["top1_drop_paired"]["ci95_points"]
    return row


class Trials:
    """Conversions of one (variant, weights, target, calibration, images) with different float blocks."""

    def __init__(self, variant: str, target: str, weights: str | None, images: str | Path, calibration: str | Path | None,
                 calibration_count: int | None, seed: int, options: dict | None, root: Path, say: Say,
                 calibration_views: int | None = None, cpu=None) -> None:
        from edgeeff.targets.base import TARGETS, check_options, get_target

        self.spec = get_target(target)
        if self.spec.precision != "int8" or "float_blocks" not in self.spec.options:
            int8 = [t.name for t in TARGETS.values() if "float_blocks" in t.options]
            raise EdgeeffError(f"{target} has no int8 mode to keep blocks out of; use one of {', '.join(int8)}")
        check_options(self.spec, options or {})  # before the first of many conversions, not inside it
        from edgeeff.model.detectors import is_detector

        self.detector = is_detector(variant)  # judged by box agreement (edgeeff.detect.trial_figures), not top-1
        if self.detector:
            from edgeeff.detect import require_trained

            require_trained(variant, weights)
        self.args = dict(variant=variant, target=target, weights=weights, images=images, calibration=calibration,
                         calibration_count=calibration_count, calibration_views=calibration_views, seed=seed, cpu=cpu)
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        self.settings: dict = {}  # budget settings the search adopted on top of the user's options
        self.root = root
        self.say = say
        self.count = 0
        self._done: dict[tuple, dict] = {}

    def run(self, blocks: list[str], label: str, settings: dict | None = None) -> dict:
        """One conversion per distinct set of float layers and settings: a set already converted
        (plain int8 asked for by both the budget and the ranking, or ``blockX_se`` added after
        ``blockX``, which already includes it) returns the earlier trial."""
        from edgeeff.convert import convert

        kept = [b for b in dict.fromkeys(blocks) if not (b.endswith("_se") and not b.startswith("-") and b.removesuffix("_se") in blocks)]
        chosen = {**self.settings, **(settings or {})}
        key = (frozenset(kept), json.dumps(chosen, sort_keys=True))
        if key in self._done:
            return self._done[key]
        self.count += 1
        options = {**self.options, **chosen, **({"float_blocks": kept} if kept else {})}
        self.say(f"trial {self.count}: {label}")
        meta = convert(**self.args, out=self.root / f"trial-{self.count}", options=options, require_valid=False)
        self._done[key] = meta
        return meta


    def run_float(self, target: str) -> dict:
        """The same variant and weights at a float target (the speedup's denominator)."""
        from edgeeff.convert import convert

        self.count += 1
        self.say(f"trial {self.count}: {target} for the speedup")
        return convert(self.args["variant"], target, weights=self.args["weights"], out=self.root / f"trial-{self.count}",
                       images=self.args["images"], require_valid=False)


def model_of(variant: str, weights: str | None):
    """The Keras model whose blocks a trial keeps in float: the classifier, or the detector (with
    the weights ``--weights`` names) as ``convert`` builds it."""
    from edgeeff.model.detectors import get_detector, is_detector

    if is_detector(variant):
        from edgeeff.detect import build_reference, choose_detector_weights, require_trained

        require_trained(variant, weights)
        return build_reference(*choose_detector_weights(get_detector(variant), weights))
    from edgeeff.api import build

    return build(variant, weights=weights, classifier_activation=None)


def costs_of(variant: str, weights: str | None) -> tuple[dict[str, int], dict[str, list[tuple[str, int]]]]:
    """Every unit in network order with its multiply-adds (a block's include its SE part), and each
    block's convolutions with theirs, cheapest first; from one build of the model."""
    from edgeeff.model import blockmap

    model = model_of(variant, weights)
    return blockmap.unit_macs(model), blockmap.layer_macs(model)


def sensitivity(trials: Trials, units: list[str], mode: str = "keep-float") -> dict:
    """One row per unit: its figures and the change against plain int8 (positive = it matters)."""
    if mode not in MODES:
        raise EdgeeffError(f"--mode must be one of {', '.join(MODES)}")
    base = validation_figures(trials.run([], "plain int8"))
    rows = []
    for unit in units:
        blocks = [unit] if mode == "keep-float" else [u for u in units if u != unit] + (["-" + unit] if unit.endswith("_se") else [])
        figures = validation_figures(trials.run(blocks, f"{unit} ({mode})"))
        sign = 1 if mode == "keep-float" else -1  # keep-float: error removed; quantize-alone: error caused
        row = {"block": unit, **figures,
               "delta_agreement": sign * (figures["agreement"] - base["agreement"]),
               "delta_cosine": sign * (figures["cosine"] - base["cosine"]) if mode == "keep-float" else 1 - figures["cosine"],
               "delta_snr_db": sign * (figures["snr_db"] - base["snr_db"]) if mode == "keep-float" else -figures["snr_db"]}
        rows.append(row)
    ranking = [r["block"] for r in sorted(rows, key=lambda r: (r["delta_snr_db"], r["delta_agreement"]), reverse=True)]
    return {"mode": mode, "target": trials.spec.name, "plain_int8": base, "rows": rows, "ranking": ranking}


def trial_root(out: Path | None) -> tuple[Path, Callable[[], None]]:
    """A temporary folder for trials (beside ``out`` so publishing is a rename) and its cleanup."""
    base = Path(out) if out is not None else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=".edgeeff-trials-", dir=base))
    return root, lambda: shutil.rmtree(root, ignore_errors=True)


def bar_chart(result: dict, path: str | Path, title: str) -> Path:
    """Horizontal bars: the SNR change per block (network order), written atomically."""
    from edgeeff import report

    rows = result["rows"]
    fig, ax = report.new_axes((7, max(3.0, 0.28 * len(rows) + 1)))
    names = [r["block"] for r in rows][::-1]
    values = [r["delta_snr_db"] for r in rows][::-1]
    ax.barh(names, values, color=["tab:red" if v > 0 else "tab:grey" for v in values])
    label = "SNR gained by keeping the block in float (dB)" if result["mode"] == "keep-float" else "-SNR with only this block in int8 (dB)"
    ax.set_xlabel(label)
    return report.save_png(fig, ax, path, title, legend=False)
