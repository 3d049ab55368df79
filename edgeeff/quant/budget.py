"""The float-fallback budget: the fewest EfficientNet blocks (or single convolutions) to keep in
float so an int8 artifact meets a top-1 drop or agreement budget (a detector's agreement: its mAP
against the fp32 detector's boxes), found with real conversions
(``edgeeff.quant.sensitivity.Trials``) and published atomically with a ``budget`` record."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from edgeeff import fsio
from edgeeff.quant.sensitivity import BudgetError, Say, Trials, trial_root, validation_figures


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




def settings_text(settings: dict | None) -> str:
    """Budget settings as reports write them: ``fast_bias_correction=False``; a setting whose value
    is itself a record (``accuracy_control``) by its name alone."""
    return ", ".join(k if isinstance(v, dict) else f"{k}={v}" for k, v in (settings or {}).items())


def _error(figures: dict) -> tuple[float, float]:
    """Worse is larger: the top-1 drop where labels give one, then disagreement with fp32."""
    return figures.get("drop_points", 0.0), -figures["agreement"]


# NNCF's accuracy control reverts ops until the budget holds or it has reverted this many. A few
# scattered float convolutions cost little; dozens cost most of the speedup (measured, Lite1 from
# the mixed preset: 26 reverted, 69 % of it kept), and the block search does better there.
MAX_REVERTED = 8


class BudgetSearch:
    """The search for the fewest units to keep in float so an int8 artifact meets a budget (top-1
    drop and/or agreement with fp32), each step a real conversion (``Trials``) judged on the
    evaluation images and recorded in ``steps``. :meth:`run` goes: plain int8; the target's
    latency-free settings (:meth:`settle`); the backend's own per-op search (:meth:`backend_search`);
    units added in sensitivity order; then :meth:`prune`, :meth:`join` and :meth:`narrow`, the last
    two keeping a change only where it also runs faster, timed side by side.

    ``latency`` (a trial's median ms) and ``side_by_side`` (two trials timed together) default to
    real measurements on this machine; tests give rules instead."""

    def __init__(self, trials: Trials, max_drop: float | None, min_agreement: float | None, threads: int | None = None,
                 steps: list[dict] | None = None, latency: Callable[[dict], float | None] | None = None,
                 side_by_side: Callable[[dict, dict], tuple[float | None, float | None]] | None = None) -> None:
        self.trials, self.max_drop, self.min_agreement, self.threads = trials, max_drop, min_agreement, threads
        self.steps = steps if steps is not None else []
        self.latency = latency or (lambda trial: _latency(trial, threads))
        self._pair = side_by_side

    def side_by_side(self, a: dict, b: dict, what: str) -> tuple[float | None, float | None]:
        if self._pair is not None:
            return self._pair(a, b)
        first, second = _side_by_side([a, b], self.threads, self.trials.say, what)
        return first, second

    def step(self, blocks: list[str], step: str, settings: dict | None = None) -> tuple[dict, bool]:
        """One step of the search: a real conversion with these units in float, recorded in ``steps``."""
        trials = self.trials
        trial = trials.run(blocks, f"{step}: float {', '.join(blocks) or 'nothing'}", settings)
        figures = validation_figures(trial)
        holds = _meets(figures, self.max_drop, self.min_agreement)
        chosen = {**trials.settings, **(settings or {})}
        self.steps.append({"step": step, "float_blocks": list(blocks), **({"settings": chosen} if chosen else {}), **figures,
                           "median_ms": self.latency(trial), "meets": holds})
        return trial, holds

    def settle(self, meta: dict) -> tuple[dict, bool]:
        """Settings pass: plain int8 under each of the target's latency-free settings the user left
        unset. The first that meets the budget wins with nothing in float; otherwise the one with the
        smallest error, if smaller than plain int8's, becomes the base of the float search (measured,
        OpenVINO Lite0: NNCF's full bias correction took plain int8 from 0.50 to 0.00 points)."""
        trials = self.trials
        best, best_settings = meta, {}
        for pairs in trials.spec.budget_settings:
            settings = dict(pairs)
            if any(key in trials.options for key in settings):  # the user chose it: never overridden
                continue
            trial, holds = self.step([], f"plain int8, {settings_text(settings)}", settings)
            if holds:
                trials.settings.update(settings)
                return trial, True
            if _error(validation_figures(trial)) < _error(validation_figures(best)):
                best, best_settings = trial, settings
        trials.settings.update(best_settings)
        return best, False

    def prune(self, chosen: list[str], meta: dict, costs: dict[str, int]) -> tuple[list[str], dict]:
        """Backward pass: try the budgeted set without each of its blocks, costliest (most multiply-adds)
        first, and drop every block the budget holds without. Adding in sensitivity order overshoots: a
        block that helped SNR may not be needed for top-1 once later blocks are float, and the costly
        ones are what eat the int8 speedup (measured: Lite0 OpenVINO kept 4 blocks, 85 % of it)."""
        for unit in sorted(chosen, key=lambda u: costs.get(u, 0), reverse=True):
            if len(chosen) == 1:
                break
            fewer = [u for u in chosen if u != unit]
            if any(set(st["float_blocks"]) == set(fewer) for st in self.steps):  # the forward pass already tried it: it missed
                continue
            trial, holds = self.step(fewer, f"without {unit}")
            if holds:
                chosen, meta = fewer, trial
        return chosen, meta

    def holds_and_runs_faster(self, blocks: list[str], step: str, current: dict, what: str) -> dict | None:
        """A candidate float set that replaces the current one only if both hold: the budget, and a
        lower latency timed side by side with the current artifact (recorded in its step)."""
        trial, holds = self.step(blocks, step)
        if not holds:
            return None
        new_ms, current_ms = self.side_by_side(trial, current, what)
        faster = bool(new_ms and current_ms and new_ms < current_ms)
        self.steps[-1].update({"side_by_side_ms": [new_ms, current_ms], "faster": faster})
        return trial if faster else None

    def narrow(self, chosen: list[str], meta: dict, layers: dict[str, list[tuple[str, int]]]) -> tuple[list[str], dict]:
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
                trial = self.holds_and_runs_faster(narrower, f"{block} as {layer}", meta, "one convolution vs its block")
                if trial:
                    chosen, meta = narrower, trial
                    break
        return chosen, meta

    def join(self, chosen: list[str], meta: dict, every: list[str], costs: dict[str, int]) -> tuple[list[str], dict]:
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
            trial = self.holds_and_runs_faster(wider, f"join {unit}", meta, "the set with a neighbour vs without")
            if trial:
                chosen, meta = wider, trial
        return chosen, meta

    def backend_search(self, meta: dict) -> tuple[list[str], dict, bool]:
        """The backend's own search, where it has one that ranks single ops by the budget's metric
        (NNCF's accuracy control; ``targets/openvino.py`` says why it can beat a block search). It
        starts from each calibration setting plain int8 was tried under, most accurate first, and
        the first result that holds wins: which base leads to few reverts is not predictable
        (measured, Lite1: from full bias correction 3 convolutions, from the more accurate mixed
        preset 26). Its float convolutions become the budget's float set. Judged like every step,
        against the Keras model; a miss leaves the block search to run on the settings pass's base.
        Not for a detector: accuracy control would score its raw output as a classifier's top-1."""
        trials, max_drop, min_agreement = self.trials, self.max_drop, self.min_agreement
        if ("accuracy_control" not in getattr(trials.spec, "options", ()) or "accuracy_control" in trials.options
                or trials.detector):
            return [], meta, False
        control = {"accuracy_control": {"images": str(trials.args["images"]), "max_drop_points": max_drop, "min_agreement": min_agreement,
                                        "max_reverted": MAX_REVERTED}}
        tried = sorted((st for st in self.steps if not st["float_blocks"]), key=_error)
        bases = list({json.dumps(st.get("settings", {}), sort_keys=True): st.get("settings", {}) for st in tried}.values()) or [{}]
        adopted = dict(trials.settings)
        trials.settings.clear()
        try:
            for base in bases:
                step = ", ".join(filter(None, ["accuracy control", settings_text(base)]))
                trial, holds = self.step([], step, {**base, **control})
                chosen = list(trial["conversion"]["accuracy_control"]["float_layers"])
                self.steps[-1]["float_blocks"] = chosen
                if holds:
                    adopted = {**base, **control}
                    return chosen, trial, True
            return [], meta, False
        finally:
            trials.settings.update(adopted)

    def run(self, out: Path, ranking: list[str] | None = None) -> dict:
        """Plain int8 if it meets the budget; else the fewest units in float (in sensitivity order)
        that do, then neighbours joined or blocks narrowed where that holds and runs faster. Publishes
        the chosen artifact to ``out`` with a ``budget`` record; raises BudgetError (publishing
        nothing) when even every unit in float misses."""
        from edgeeff.convert import publish
        from edgeeff.data.images import list_samples
        from edgeeff.quant.sensitivity import costs_of, sensitivity

        trials, max_drop, min_agreement, threads = self.trials, self.max_drop, self.min_agreement, self.threads

        samples = list_samples(trials.args["images"])
        if max_drop is not None and any(s.label is None for s in samples):
            raise BudgetError("--max-drop needs labelled evaluation images (synset in the file name, or label<TAB>path)")
        check_budget_resolution(len(samples), max_drop)
        meta, holds = self.step([], "plain int8")
        chosen: list[str] = []
        costs: dict[str, int] = {}
        total_macs = 0
        trial_metas = [meta]
        if not holds:
            meta, holds = self.settle(meta)
        if not holds:
            costs, layers = costs_of(trials.args["variant"], trials.args["weights"])
            every = list(costs)
            total_macs = sum(costs.values())
            costs.update({name: macs for group in layers.values() for name, macs in group})  # a ranking may name convolutions
            chosen, meta, holds = self.backend_search(meta)
        if not holds:
            if ranking is None:
                ranking = sensitivity(trials, every)["ranking"]
            unknown = [u for u in ranking if u not in costs]
            if unknown:
                raise BudgetError(f"the ranking names block(s) this model lacks: {', '.join(unknown)}; rerun `edgeeff sensitivity` for it")
            for unit in ranking:
                chosen.append(unit)
                meta, holds = self.step(list(chosen), f"add {unit}")
                trial_metas.append(meta)
                if holds:
                    break
            else:
                figures = validation_figures(meta)
                scope = "every block" if set(ranking) >= set(every) else f"all {len(ranking)} ranked blocks"
                reached = (f"drop {figures['drop_points']:+.2f} points, " if "drop_points" in figures else "") + (
                    f"{_agreement_name(trials)} {figures['agreement']:.1%}")
                raise BudgetError(f"the budget ({_budget_text(max_drop, min_agreement, _agreement_name(trials))}) cannot be met even "
                                  f"with {scope} in float ({reached}); nothing was written")
            chosen, meta = self.prune(chosen, meta, costs)
            chosen, meta = self.join(chosen, meta, every, costs)
            chosen, meta = self.narrow(chosen, meta, layers)
        fp32 = trials.run_float(f"{trials.spec.backend}-fp32")
        # The comparison that matters, measured side by side: fp32, plain int8 and the chosen artifact
        fp32_ms, plain_ms, final_ms = _side_by_side([fp32, trial_metas[0], meta], threads, trials.say, "fp32, plain int8 and the result")
        budget = {"max_drop_points": max_drop, "min_agreement": min_agreement, "float_blocks": chosen, "settings": trials.settings,
                  "steps": self.steps,
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

def _agreement_name(trials) -> str:
    return "mAP against the fp32 detector's boxes" if trials.detector else "agreement"


def _budget_text(max_drop: float | None, min_agreement: float | None, agreement: str = "agreement") -> str:
    parts = ([f"top-1 drop <= {max_drop:g} points"] if max_drop is not None else []) + (
        [f"{agreement} >= {min_agreement:.1%}"] if min_agreement is not None else [])
    return " and ".join(parts)


def convert_within_budget(variant: str, target: str, weights: str | None, images: str | Path, calibration, calibration_count,
                          seed: int, options: dict | None, out: Path, max_drop: float | None, min_agreement: float | None,
                          say: Say, calibration_views: int | None = None, cpu=None, sensitivity_report: str | Path | None = None,
                          threads: int | None = None) -> dict:
    """``convert --max-drop/--min-agreement``: trials in a temporary folder beside ``out``, the
    search, the chosen artifact published to ``out``; a ranking from ``edgeeff sensitivity --json``
    when given (else measured)."""
    from edgeeff.convert import check_writable

    ranking = None
    if sensitivity_report:
        try:
            ranking = json.loads(Path(sensitivity_report).read_text())["ranking"]
        except (ValueError, KeyError, TypeError):
            raise BudgetError(f"{sensitivity_report} is not an `edgeeff sensitivity --json` report (no ranking)") from None
    check_writable(Path(out))
    root, cleanup = trial_root(Path(out))
    try:
        trials = Trials(variant, target, weights, images, calibration, calibration_count, seed, options, root, say,
                        calibration_views, cpu=cpu)
        return BudgetSearch(trials, max_drop, min_agreement, threads).run(Path(out), ranking)
    finally:
        cleanup()
