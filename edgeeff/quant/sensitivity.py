"""Which blocks of EfficientNet suffer from int8, the same way on every backend, and the fewest to
keep in float to meet a budget.

Both questions are answered with real conversions: each trial is an ordinary ``convert()`` of the
target with the conversion option ``float_blocks`` (each backend turns it into its own form:
onnxruntime ``nodes_to_exclude``, NNCF ``IgnoredScope``, the TFLite quantization debugger's
deny-list), validated against the Keras fp32 model on the evaluation images. Trials live in a
temporary folder; only the chosen artifact is published.

* ``sensitivity``: per unit (``edgeeff.model.blockmap``), ``keep-float`` (everything int8 but this unit:
  the error it removes) or ``quantize-alone`` (only this unit int8: the error it causes), with
  top-1 agreement, mean cosine and SNR of the logits against fp32.
* ``within_budget``: plain int8 first; if it misses the budget, the target's latency-free
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
import math
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from edgeeff import fsio
from edgeeff.errors import EdgeeffError

Say = Callable[..., None]
MODES = ("keep-float", "quantize-alone")


class BudgetError(EdgeeffError):
    """The budget cannot be met or cannot be measured; nothing was published."""


def validation_figures(meta: dict) -> dict:
    """A trial's scores from its conversion metadata, as sensitivity, budget and sweep rows carry them."""
    v = meta["validation"]
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


def _costs(variant: str, weights: str | None) -> tuple[dict[str, int], dict[str, list[tuple[str, int]]]]:
    """Every unit in network order with its multiply-adds (a block's include its SE part), and each
    block's convolutions with theirs, cheapest first; from one build of the model."""
    from edgeeff.model import blockmap
    from edgeeff.api import build

    model = build(variant, weights=weights, classifier_activation=None)
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


def smallest_measurable_drop(images: int) -> float:
    """One image of n, in top-1 points: a budget below it cannot be told from zero."""
    return 100.0 / images


def check_budget_resolution(images: int, max_drop: float | None) -> None:
    if max_drop is not None and max_drop < smallest_measurable_drop(images):
        enough = (f"use at least {math.ceil(100 / max_drop)} labelled images" if max_drop > 0 else
                  "no number of images can show a drop of exactly 0; give a positive --max-drop, or --min-agreement")
        raise BudgetError(f"--max-drop {max_drop:g} is finer than {images} evaluation images can measure (one image = "
                          f"{smallest_measurable_drop(images):.2f} points); {enough}")


def _meets(figures: dict, max_drop: float | None, min_agreement: float | None) -> bool:
    if max_drop is not None and figures["drop_points"] > max_drop + 1e-9:
        return False
    return min_agreement is None or figures["agreement"] >= min_agreement


QUICK = dict(warmup_runs=5, warmup_seconds=0.5, min_runs=30, min_seconds=2.0)


def _latency(meta: dict, threads: int | None) -> float | None:
    from edgeeff.measure import Schedule, measure_in_subprocess

    return measure_in_subprocess(meta["path"], threads, 1, Schedule(**QUICK)).get("median_ms")


SIDE_BY_SIDE = dict(warmup_runs=5, warmup_seconds=0.5, min_runs=64, min_seconds=1.5)


def _side_by_side(metas: list[dict], threads: int | None, say: Say, what: str, rounds: int = 3) -> list[float | None]:
    """Median ms of artifacts compared with each other: per round, a fresh process each, timed in
    alternating blocks (``edgeeff.measure.side_by_side``); medians over rounds. Fresh processes one
    after another differ by 20-30 % on a shared host, and two processes of the same artifact side
    by side by up to 8 % (memory placement), so neither alone can judge a 5 % difference; the
    rounds take care of the second."""
    from statistics import median

    from edgeeff.measure import Schedule, interleaved_rounds

    runs = interleaved_rounds([[m["path"] for m in metas]], rounds, threads, Schedule(**SIDE_BY_SIDE),
                              lambda text: say(f"timing {what} side by side, {text}"), together=True)[0]
    return [median(r) if r else None for r in runs]


def _step(trials: Trials, blocks: list[str], step: str, max_drop: float | None, min_agreement: float | None,
          steps: list[dict], latency: Callable[[dict], float | None], settings: dict | None = None) -> tuple[dict, bool]:
    """One step of the search: a real conversion with these units in float, recorded in ``steps``."""
    trial = trials.run(blocks, f"{step}: float {', '.join(blocks) or 'nothing'}", settings)
    figures = validation_figures(trial)
    holds = _meets(figures, max_drop, min_agreement)
    chosen = {**trials.settings, **(settings or {})}
    steps.append({"step": step, "float_blocks": list(blocks), **({"settings": chosen} if chosen else {}), **figures,
                  "median_ms": latency(trial), "meets": holds})
    return trial, holds


def settings_text(settings: dict | None) -> str:
    """Budget settings as reports write them: ``fast_bias_correction=False``; a setting whose value
    is itself a record (``accuracy_control``) by its name alone."""
    return ", ".join(k if isinstance(v, dict) else f"{k}={v}" for k, v in (settings or {}).items())


def _error(figures: dict) -> tuple[float, float]:
    """Worse is larger: the top-1 drop where labels give one, then disagreement with fp32."""
    return figures.get("drop_points", 0.0), -figures["agreement"]


def settle(trials: Trials, meta: dict, max_drop: float | None, min_agreement: float | None, steps: list[dict],
            latency: Callable[[dict], float | None]) -> tuple[dict, bool]:
    """Settings pass: plain int8 under each of the target's latency-free settings the user left
    unset. The first that meets the budget wins with nothing in float; otherwise the one with the
    smallest error, if smaller than plain int8's, becomes the base of the float search (measured,
    OpenVINO Lite0: NNCF's full bias correction took plain int8 from 0.50 to 0.00 points)."""
    best, best_settings = meta, {}
    for pairs in trials.spec.budget_settings:
        settings = dict(pairs)
        if any(key in trials.options for key in settings):  # the user chose it: never overridden
            continue
        trial, holds = _step(trials, [], f"plain int8, {settings_text(settings)}", max_drop, min_agreement, steps, latency, settings)
        if holds:
            trials.settings.update(settings)
            return trial, True
        if _error(validation_figures(trial)) < _error(validation_figures(best)):
            best, best_settings = trial, settings
    trials.settings.update(best_settings)
    return best, False


def prune(trials: Trials, chosen: list[str], meta: dict, costs: dict[str, int], max_drop: float | None,
           min_agreement: float | None, steps: list[dict], latency: Callable[[dict], float | None]) -> tuple[list[str], dict]:
    """Backward pass: try the budgeted set without each of its blocks, costliest (most multiply-adds)
    first, and drop every block the budget holds without. Adding in sensitivity order overshoots: a
    block that helped SNR may not be needed for top-1 once later blocks are float, and the costly
    ones are what eat the int8 speedup (measured: Lite0 OpenVINO kept 4 blocks, 85 % of it)."""
    for unit in sorted(chosen, key=lambda u: costs.get(u, 0), reverse=True):
        if len(chosen) == 1:
            break
        fewer = [u for u in chosen if u != unit]
        if any(set(st["float_blocks"]) == set(fewer) for st in steps):  # the forward pass already tried it: it missed
            continue
        trial, holds = _step(trials, fewer, f"without {unit}", max_drop, min_agreement, steps, latency)
        if holds:
            chosen, meta = fewer, trial
    return chosen, meta


def _holds_and_runs_faster(trials: Trials, blocks: list[str], step: str, current: dict, max_drop: float | None,
                           min_agreement: float | None, steps: list[dict], latency: Callable[[dict], float | None],
                           side_by_side: Callable[[dict, dict], tuple[float | None, float | None]]) -> dict | None:
    """A candidate float set that replaces the current one only if both hold: the budget, and a
    lower latency timed side by side with the current artifact (recorded in its step)."""
    trial, holds = _step(trials, blocks, step, max_drop, min_agreement, steps, latency)
    if not holds:
        return None
    new_ms, current_ms = side_by_side(trial, current)
    faster = bool(new_ms and current_ms and new_ms < current_ms)
    steps[-1].update({"side_by_side_ms": [new_ms, current_ms], "faster": faster})
    return trial if faster else None


def narrow(trials: Trials, chosen: list[str], meta: dict, layers: dict[str, list[tuple[str, int]]], max_drop: float | None,
            min_agreement: float | None, steps: list[dict], latency: Callable[[dict], float | None],
            side_by_side: Callable[[dict, dict], tuple[float | None, float | None]]) -> tuple[list[str], dict]:
    """Layer pass: try each float block as one of its convolutions alone (cheapest first), and keep
    the first that holds the budget and is faster, timed side by side with the current set. Fewer
    multiply-adds in float is not enough: where a block's convolutions split between int8 and float,
    the backend converts the activations between them, and at high resolution that costs more
    than the float convolution saved (measured, OpenVINO Lite0 with stem float too: block1a_dwconv
    alone kept 82 % of the int8 speedup where the whole block1a had kept 90 %)."""
    for block in list(chosen):
        if len(layers.get(block, [])) < 2:
            continue
        for layer, _ in layers[block]:
            narrower = [layer if u == block else u for u in chosen]
            trial = _holds_and_runs_faster(trials, narrower, f"{block} as {layer}", meta, max_drop, min_agreement, steps, latency,
                                           side_by_side)
            if trial:
                chosen, meta = narrower, trial
                break
    return chosen, meta


def join_blocks(trials: Trials, chosen: list[str], meta: dict, every: list[str], costs: dict[str, int], max_drop: float | None,
          min_agreement: float | None, steps: list[dict], latency: Callable[[dict], float | None],
          side_by_side: Callable[[dict, dict], tuple[float | None, float | None]]) -> tuple[list[str], dict]:
    """Island pass: try adding each int8 block whose every neighbour is already float (the network's
    input and output count as float), cheapest first, and keep it where the budget holds and the set
    runs faster, timed side by side. Such a block is where the activations leave float and come
    back: adding it removes a dequantize-quantize pair instead of adding one, and on onnxruntime each
    such boundary is a layout change too (measured, Lite0 onnx on AVX2 with block1a float: adding
    the stem, whose int8 convolution on 3 input channels is slow there, kept 110 % of the int8
    speedup where block1a alone kept 96 %, 11 interleaved rounds of fresh processes in an earlier
    sitting; 103 % against 89 % in the re-timings of the published results). The set then holds
    more blocks than the fewest; the record's steps say which were added and how fast each ran."""
    from edgeeff.model.blockmap import unit_of

    blocks = [u for u in every if not u.endswith("_se")]

    def bridges(unit: str, floats: list[str]) -> bool:
        at = blocks.index(unit)
        return unit not in floats and all(n in floats for n in blocks[max(at - 1, 0):at] + blocks[at + 1:at + 2])

    def block_of(name: str) -> str | None:  # block4a, block4a_se, block4a_dwconv -> block4a
        unit = unit_of(name.removeprefix("-")) if name not in blocks else name
        return unit.removesuffix("_se") if unit else None

    def position(name: str) -> int:
        block = block_of(name)
        return blocks.index(block) if block in blocks else len(blocks)

    for unit in sorted((u for u in blocks if bridges(u, chosen)), key=lambda u: costs.get(u, 0)):
        # the whole block replaces any of its convolutions (or SE part) the set named alone
        wider = sorted([u for u in chosen if block_of(u) != unit] + [unit], key=position)
        trial = _holds_and_runs_faster(trials, wider, f"join {unit}", meta, max_drop, min_agreement, steps, latency, side_by_side)
        if trial:
            chosen, meta = wider, trial
    return chosen, meta


# NNCF's accuracy control reverts ops until the budget holds or it has reverted this many. A few
# scattered float convolutions cost little; dozens cost most of the speedup (measured, Lite1 from
# the mixed preset: 26 reverted, 69 % of it kept), and the block search does better there.
MAX_REVERTED = 8


def backend_search(trials: Trials, meta: dict, max_drop: float | None, min_agreement: float | None, steps: list[dict],
                    latency: Callable[[dict], float | None]) -> tuple[list[str], dict, bool]:
    """The backend's own search, where it has one that ranks single ops by the budget's metric
    (NNCF's accuracy control; ``targets/openvino.py`` says why it can beat a block search). It
    starts from each calibration setting plain int8 was tried under, most accurate first, and
    the first result that holds wins: which base leads to few reverts is not predictable
    (measured, Lite1: from full bias correction 3 convolutions, from the more accurate mixed
    preset 26). Its float convolutions become the budget's float set. Judged like every step,
    against the Keras model; a miss leaves the block search to run on the settings pass's base."""
    if "accuracy_control" not in getattr(trials.spec, "options", ()) or "accuracy_control" in trials.options:
        return [], meta, False
    control = {"accuracy_control": {"images": str(trials.args["images"]), "max_drop_points": max_drop, "min_agreement": min_agreement,
                                    "max_reverted": MAX_REVERTED}}
    tried = sorted((st for st in steps if not st["float_blocks"]), key=_error)
    bases = list({json.dumps(st.get("settings", {}), sort_keys=True): st.get("settings", {}) for st in tried}.values()) or [{}]
    adopted = dict(trials.settings)
    trials.settings.clear()
    try:
        for base in bases:
            step = ", ".join(filter(None, ["accuracy control", settings_text(base)]))
            trial, holds = _step(trials, [], step, max_drop, min_agreement, steps, latency, {**base, **control})
            chosen = list(trial["conversion"]["accuracy_control"]["float_layers"])
            steps[-1]["float_blocks"] = chosen
            if holds:
                adopted = {**base, **control}
                return chosen, trial, True
        return [], meta, False
    finally:
        trials.settings.update(adopted)


def within_budget(trials: Trials, out: Path, max_drop: float | None, min_agreement: float | None, ranking: list[str] | None = None,
                  threads: int | None = None) -> dict:
    """Plain int8 if it meets the budget; else the fewest units in float (in sensitivity order)
    that do, then neighbours joined or blocks narrowed where that holds and runs faster. Publishes
    the chosen artifact to ``out`` with a ``budget`` record; raises BudgetError (publishing
    nothing) when even every unit in float misses."""
    from edgeeff.convert import publish

    from edgeeff.data.images import list_samples

    samples = list_samples(trials.args["images"])
    if max_drop is not None and any(s.label is None for s in samples):
        raise BudgetError("--max-drop needs labelled evaluation images (synset in the file name, or label<TAB>path)")
    check_budget_resolution(len(samples), max_drop)
    steps: list[dict] = []

    def latency(trial: dict) -> float | None:
        return _latency(trial, threads)

    meta, holds = _step(trials, [], "plain int8", max_drop, min_agreement, steps, latency)
    chosen: list[str] = []
    costs: dict[str, int] = {}
    total_macs = 0
    trial_metas = [meta]
    if not holds:
        meta, holds = settle(trials, meta, max_drop, min_agreement, steps, latency)
    if not holds:
        costs, layers = _costs(trials.args["variant"], trials.args["weights"])
        every = list(costs)
        total_macs = sum(costs.values())
        costs.update({name: macs for group in layers.values() for name, macs in group})  # a ranking may name convolutions
        chosen, meta, holds = backend_search(trials, meta, max_drop, min_agreement, steps, latency)
    if not holds:
        if ranking is None:
            ranking = sensitivity(trials, every)["ranking"]
        unknown = [u for u in ranking if u not in costs]
        if unknown:
            raise BudgetError(f"the ranking names block(s) this model lacks: {', '.join(unknown)}; rerun `edgeeff sensitivity` for it")
        for unit in ranking:
            chosen.append(unit)
            meta, holds = _step(trials, list(chosen), f"add {unit}", max_drop, min_agreement, steps, latency)
            trial_metas.append(meta)
            if holds:
                break
        else:
            figures = validation_figures(meta)
            scope = "every block" if set(ranking) >= set(every) else f"all {len(ranking)} ranked blocks"
            raise BudgetError(f"the budget ({_budget_text(max_drop, min_agreement)}) cannot be met even with {scope} in float "
                              f"(drop {figures.get('drop_points', float('nan')):+.2f} points, agreement {figures['agreement']:.1%}); "
                              "nothing was written")
        chosen, meta = prune(trials, chosen, meta, costs, max_drop, min_agreement, steps, latency)
        chosen, meta = join_blocks(trials, chosen, meta, every, costs, max_drop, min_agreement, steps, latency,
                             lambda a, b: tuple(_side_by_side([a, b], threads, trials.say, "the set with a neighbour vs without")))
        chosen, meta = narrow(trials, chosen, meta, layers, max_drop, min_agreement, steps, latency,
                               lambda a, b: tuple(_side_by_side([a, b], threads, trials.say, "one convolution vs its block")))
    fp32 = trials.run_float(f"{trials.spec.backend}-fp32")
    # The comparison that matters, measured side by side: fp32, plain int8 and the chosen artifact
    fp32_ms, plain_ms, final_ms = _side_by_side([fp32, trial_metas[0], meta], threads, trials.say, "fp32, plain int8 and the result")
    budget = {"max_drop_points": max_drop, "min_agreement": min_agreement, "float_blocks": chosen, "settings": trials.settings,
              "steps": steps,
              "plain_int8_median_ms": plain_ms, "median_ms": final_ms, "fp32_median_ms": fp32_ms,
              "latency_cost_ms": final_ms - plain_ms if plain_ms and final_ms else None,
              "speedup_plain_int8": fp32_ms / plain_ms if fp32_ms and plain_ms else None,
              "speedup_budgeted": fp32_ms / final_ms if fp32_ms and final_ms else None,
              "speedup_kept": (plain_ms / final_ms) if plain_ms and final_ms else None,
              "float_macs_fraction": sum(costs.get(u, 0) for u in chosen) / total_macs if chosen else 0.0,
              "result": validation_figures(meta),
              "measured_on": "this machine: steps once each (a fresh process); a joined neighbour or a convolution against the set before it, and fp32, plain int8 and the result, side by side (a process each, alternating blocks of runs), 3 rounds"}
    folder = Path(meta["path"])
    meta.pop("path", None)
    meta["budget"] = budget
    fsio.write_text(folder / "edgeeff.json", json.dumps(meta, indent=2, default=str) + "\n")
    dest = out / folder.name
    out.mkdir(parents=True, exist_ok=True)
    publish(folder, dest)
    meta["path"] = str(dest)
    return meta


def _budget_text(max_drop: float | None, min_agreement: float | None) -> str:
    parts = ([f"top-1 drop <= {max_drop:g} points"] if max_drop is not None else []) + (
        [f"agreement >= {min_agreement:.1%}"] if min_agreement is not None else [])
    return " and ".join(parts)


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
