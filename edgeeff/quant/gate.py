"""The CI gate: the accuracy cost of quantization against a budget and a committed baseline.

For every (variant, weights, target) in the config, the quantized artifact and its fp32 Keras
reference are scored on the same evaluation images, so the top-1 drop is a paired quantity; it is
reported with a paired bootstrap interval and McNemar's test, and the budget applies to the point
estimate or to the interval's upper bound (``budget_on``). The baseline is rewritten only by
``--update-baseline``, never as a side effect.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from edgeeff.errors import EdgeeffError
from edgeeff.model.detectors import is_detector
from edgeeff.quant import detect_gate

BASELINE_VERSION = 1


class GateConfigError(EdgeeffError):
    """A config or baseline the gate cannot run with (exit 2)."""


@dataclass(frozen=True)
class Check:
    variant: str
    weights: str | None
    targets: tuple[str, ...]
    images: Path | None = None  # detection checks: a COCO annotations JSON (held out)
    calibration: Path | None = None  # detection checks: an image folder

    @property
    def detection(self) -> bool:
        return detect_gate.is_detection_check(self)


@dataclass(frozen=True)
class GateConfig:
    checks: tuple[Check, ...]
    images: Path | None = None  # one labelled set, split into calibration and evaluation
    calibration: Path | None = None  # or explicit, disjoint lists
    evaluation: Path | None = None
    calibration_fraction: float = 0.4
    calibration_count: int | None = None
    seed: int = 0
    max_drop: float = 1.0  # top-1 points, fp32 minus quantized
    max_map_drop: float = 3.0  # detection checks: COCO mAP@[.5:.95] points, fp32 minus quantized
    min_agreement: float = 0.95
    tolerance: float = 1.0  # points the drop may grow over the baseline's
    agreement_tolerance: float = 0.02  # agreement may fall this much below the baseline's
    budget_on: str = "point"  # "point" or "bound" (upper end of the paired 95 % interval)
    baseline: Path = Path("edgeeff-baseline.json")
    cache: Path = Path(".edgeeff-gate")
    threads: int = 1
    source: Path = field(default=Path("."), compare=False)


_SCALARS = {f.name for f in fields(GateConfig)} - {"checks", "source"}


def _check_weights(item: dict, path: Path, number: int) -> str | None:
    """A check's weights: as written, else the variant's real ones. A gate over random weights only
    when the config says ``weights = "none"``: an untrained model's drop says nothing about a release."""
    if "weights" in item:
        return str(item["weights"])
    if is_detector(str(item["variant"])):
        return None  # refused with the check: a detector has no real weights to default to
    from edgeeff.model.variants import resolve
    from edgeeff.weights.cards import default_weights_name

    try:
        return default_weights_name(resolve(str(item["variant"])))
    except EdgeeffError as exc:
        raise GateConfigError(f"{path}: checks #{number}: {exc}") from None


def load_config(path: str | Path) -> GateConfig:
    """Read ``edgeeff.toml`` (top-level keys) or ``pyproject.toml`` (``[tool.edgeeff]``); unknown keys are refused."""
    path = Path(path)
    if not path.is_file():
        raise GateConfigError(f"no config at {path}; write one (see README: CI gate) or pass --config")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GateConfigError(f"{path} is not valid TOML: {exc}") from None
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("edgeeff")
        if data is None:
            raise GateConfigError(f"{path} has no [tool.edgeeff] table")
    unknown = sorted(set(data) - _SCALARS - {"checks"})
    if unknown:
        raise GateConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known: checks, {', '.join(sorted(_SCALARS))}")
    raw_checks = data.get("checks")
    if not raw_checks or not isinstance(raw_checks, list):
        raise GateConfigError(f"{path}: needs at least one [[checks]] table with variant, weights, targets")
    checks = []
    base = path.parent
    for number, item in enumerate(raw_checks, 1):
        detection = "variant" in item and is_detector(str(item["variant"]))
        allowed = {"variant", "weights", "targets"} | ({"images", "calibration"} if detection else set())
        extra = sorted(set(item) - allowed)
        if extra or "variant" not in item or "targets" not in item:
            more = " (images and calibration belong to detection checks; classifier checks share the top-level data)" if not detection else ""
            raise GateConfigError(f"{path}: checks #{number} needs variant and targets (and optional weights); "
                                  f"unknown: {', '.join(extra) or '-'}{more}")
        targets = item["targets"] if isinstance(item["targets"], list) else [item["targets"]]
        data_paths = {key: _config_path(item[key], base) for key in ("images", "calibration") if key in item}
        check = Check(str(item["variant"]), _check_weights(item, path, number), tuple(str(t) for t in targets), **data_paths)
        if check.detection:
            detect_gate.refusal(check, GateConfigError)
        checks.append(check)
    values: dict = {}
    for key in _SCALARS & set(data):
        value = data[key]
        if key in ("images", "calibration", "evaluation", "baseline", "cache"):
            value = _config_path(value, base)
        values[key] = value
    for key, default in (("baseline", "edgeeff-baseline.json"), ("cache", ".edgeeff-gate")):
        values.setdefault(key, base / default)
    config = GateConfig(checks=tuple(checks), source=path, **values)
    if config.budget_on not in ("point", "bound"):
        raise GateConfigError(f"{path}: budget_on must be 'point' or 'bound', got {config.budget_on!r}")
    if any(not c.detection for c in config.checks) and (config.images is None) == (config.evaluation is None):
        raise GateConfigError(f"{path}: give either images (split by calibration_fraction) or calibration + evaluation lists")
    return config


def _config_path(value, base: Path) -> Path:
    """A path of the config: $VARIABLES and ~ expanded, relative to the config's folder."""
    value = Path(os.path.expandvars(str(value))).expanduser()
    return value if value.is_absolute() else base / value


def _as_written(path: Path, config: GateConfig) -> str:
    """A path relative to the config's folder where it lies under it."""
    try:
        return str(path.relative_to(config.source.parent))
    except ValueError:
        return str(path)


def _data(config: GateConfig):
    from edgeeff.data.images import list_samples, split

    if config.images is not None:
        if not Path(config.images).exists():
            raise GateConfigError(f"evaluation images {config.images} do not exist")
        calib, evaluation = split(list_samples(config.images), config.calibration_fraction, config.seed)
        return calib, evaluation
    if config.calibration is None:
        raise GateConfigError("evaluation given without calibration; give both lists")
    return list_samples(config.calibration), list_samples(config.evaluation)


def manifest(samples) -> dict:
    from edgeeff.fsio import sha256_of

    digest = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.path.name):
        digest.update(f"{s.path.name}:{s.label}:{sha256_of(s.path)}\n".encode())
    return {"images": len(samples), "sha256": digest.hexdigest()}


def check_baseline(config: GateConfig, baseline: dict, evaluation_manifest: dict | None,
                   detection_manifests: dict[str, dict] | None = None) -> None:
    """Before any work: the baseline must be for these evaluation images and hold every pair
    (a detection pair's entry names its own evaluation set: ``detection_manifests`` by annotations path)."""
    if evaluation_manifest is not None and baseline.get("data", {}).get("evaluation") != evaluation_manifest:
        raise GateConfigError(
            f"the evaluation images differ from the baseline's ({config.baseline}); the drops are not comparable. "
            "Restore the data or rewrite the baseline with --update-baseline")
    held = baseline.get("rows", {})
    for check in config.checks:
        for target in check.targets:
            key = _key(check.variant, check.weights, target)
            if key not in held:
                raise GateConfigError(f"the baseline {config.baseline} has no entry for {key} (it holds {', '.join(sorted(held)) or 'nothing'}); "
                                      "run with --update-baseline to record it")
            if check.detection and detection_manifests is not None and held[key].get("evaluation") != detection_manifests[str(check.images)]:
                raise GateConfigError(f"the images of {check.images} differ from those the baseline's {key} was measured on; "
                                      "the drops are not comparable. Restore the data or rewrite the baseline with --update-baseline")


def run_gate(config: GateConfig, baseline: dict | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Convert (or reuse) and score every pair; returns rows, data manifests and versions."""
    import numpy as np

    from edgeeff.artifact import open_artifact, reference_model
    from edgeeff.convert import convert
    from edgeeff.data.images import write_list
    from edgeeff.evaluate import paired_drop, score_pair
    from edgeeff.targets.base import get_target, versions

    say = progress or (lambda _m: None)
    for check in config.checks:
        for target in check.targets:
            if not get_target(target).needs_calibration:
                raise GateConfigError(f"{target} is not a quantized target; the gate compares int8 targets with fp32")
    classifiers = [c for c in config.checks if not c.detection]
    detections = [c for c in config.checks if c.detection]
    data: dict = {"seed": config.seed, "calibration_count": config.calibration_count}
    if classifiers:
        calib, evaluation = _data(config)
        if not evaluation or any(s.label is None for s in evaluation):
            raise GateConfigError("the evaluation images need labels (synset in the file name, or a label<TAB>path list)")
        data.update(calibration=manifest(calib), evaluation=manifest(evaluation))
    detection_manifests = {str(c.images): detect_gate.evaluation_manifest(c.images) for c in detections}  # by path: check_baseline
    if detection_manifests:  # named as the config names them, not by this machine's absolute paths
        data["detection_evaluation"] = {_as_written(Path(path), config): m for path, m in detection_manifests.items()}
    if baseline is not None:
        check_baseline(config, baseline, data.get("evaluation"), detection_manifests)
    config.cache.mkdir(parents=True, exist_ok=True)
    rows = []
    if classifiers:
        calib_list = write_list(calib, config.cache / "calibration.txt")
        eval_list = write_list(evaluation, config.cache / "evaluation.txt")
    for check in classifiers:
        reference = None
        for target in check.targets:
            say(f"{check.variant} {target}: converting")
            meta = convert(check.variant, target, weights=check.weights, out=config.cache / "artifacts", calibration=calib_list,
                           calibration_count=config.calibration_count, seed=config.seed, images=eval_list, require_valid=False)
            folder = meta["path"]
            meta, runner = open_artifact(folder, threads=config.threads)
            if reference is None:
                say(f"{check.variant}: building the fp32 reference")
                reference = reference_model(meta)
                resolution = meta["preprocessing"]["resolution"]
                from edgeeff.data.preprocess import PreprocessCard

                card = PreprocessCard.from_dict(meta["preprocessing"])
                ref_scores = score_pair(lambda x: reference.predict(x, verbose=0, batch_size=len(x)), None, evaluation, resolution, card)
            say(f"{check.variant} {target}: scoring {len(evaluation)} images")
            scored = score_pair(runner.predict, None, evaluation, resolution, card)
            agree = np.asarray(scored["predicted"]) == np.asarray(ref_scores["predicted"])
            drop = paired_drop(ref_scores["correct"], scored["correct"])
            rows.append({
                "variant": check.variant, "weights": check.weights, "target": target,
                "images": drop["images"], "fp32_top1": ref_scores["top1"], "quantized_top1": scored["top1"],
                "drop_points": drop["drop_points"], "drop_ci95_points": drop["ci95_points"], "mcnemar_p": drop["mcnemar_p"],
                "only_fp32_right": drop["only_reference_right"], "only_quantized_right": drop["only_artifact_right"],
                "agreement": float(agree.mean()), "smallest_step_points": drop["smallest_step_points"],
                "conversion_failures": meta["validation"].get("failures", []), "artifact": folder,
            })
    for check in detections:
        rows += detect_gate.run_detection_check(check, config, say, GateConfigError)
    return {
        "rows": rows,
        "data": data,
        "versions": versions("tensorflow-cpu|tensorflow", "ai-edge-litert|tflite-runtime", "tf2onnx", "onnxruntime", "openvino", "nncf"),
    }


def _key(variant: str, weights: str, target: str) -> str:
    """A pair's name in the baseline file."""
    return f"{variant}|{weights}|{target}"


def judge(config: GateConfig, result: dict, baseline: dict | None) -> tuple[list[str], list[str]]:
    """(failures, notes) of a run against the budget and the baseline."""
    failures, notes = [], []
    if baseline is not None:
        check_baseline(config, baseline, result["data"].get("evaluation"))
    for row in result["rows"]:
        if row.get("task") == "detect":
            entry = baseline["rows"][_key(row["variant"], row["weights"], row["target"])] if baseline is not None else None
            if entry is not None:
                row["baseline_drop_points"] = entry["drop_points"]
            failures += detect_gate.judge_row(row, config.max_map_drop, config.budget_on, entry, config.tolerance)
            continue
        name = f"{row['variant']} {row['target']}"
        low, high = row["drop_ci95_points"]
        measured = row["drop_points"] if config.budget_on == "point" else high
        what = "top-1 drop" if config.budget_on == "point" else "upper 95% bound of the top-1 drop"
        if measured > config.max_drop:
            failures.append(f"{name}: {what} {measured:.2f} points > max_drop {config.max_drop:g} (budget)")
        if row["agreement"] < config.min_agreement:
            failures.append(f"{name}: top-1 agreement {row['agreement']:.3f} < min_agreement {config.min_agreement:g} (budget)")
        if baseline is not None:
            entry = baseline["rows"][_key(row['variant'], row['weights'], row['target'])]
            row["baseline_drop_points"] = entry["drop_points"]
            row["baseline_agreement"] = entry["agreement"]
            if row["drop_points"] > entry["drop_points"] + config.tolerance:
                failures.append(f"{name}: top-1 drop {row['drop_points']:.2f} points grew by {row['drop_points'] - entry['drop_points']:.2f} "
                                f"over the baseline's {entry['drop_points']:.2f} (tolerance {config.tolerance:g})")
            if row["agreement"] < entry["agreement"] - config.agreement_tolerance:
                failures.append(f"{name}: agreement {row['agreement']:.3f} fell below the baseline's {entry['agreement']:.3f} "
                                f"by more than {config.agreement_tolerance:g}")
        step = row["smallest_step_points"]
        if high - low > config.max_drop:
            notes.append(f"{name}: with {row['images']} images one image is {step:.2f} points and the paired 95% interval "
                         f"[{low:.2f}, {high:.2f}] is wider than max_drop {config.max_drop:g}: a drop of that size is within the noise")
    return failures, notes


def read_baseline(path: Path) -> dict:
    if not path.is_file():
        raise GateConfigError(f"no baseline at {path}; record one deliberately with: edgeeff check --update-baseline")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise GateConfigError(f"baseline {path} is not valid JSON ({exc}); rewrite it with --update-baseline") from None
    if data.get("version") != BASELINE_VERSION or "rows" not in data:
        raise GateConfigError(f"baseline {path} is not an edgeeff baseline (version {BASELINE_VERSION}); rewrite it with --update-baseline")
    return data


BASELINE_FIELDS = {
    "classify": ("drop_points", "drop_ci95_points", "agreement", "fp32_top1", "quantized_top1", "images"),
    "detect": ("drop_points", "drop_ci95_points", "fp32_map", "quantized_map", "images", "evaluation"),
}


def write_baseline(config: GateConfig, result: dict) -> Path:
    from edgeeff import fsio

    payload = {
        "version": BASELINE_VERSION,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": result["data"],
        "versions": result["versions"],
        "rows": {_key(r['variant'], r['weights'], r['target']): {k: r[k] for k in BASELINE_FIELDS[r.get("task", "classify")]}
                 for r in result["rows"]},
    }
    return fsio.write_text(config.baseline, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def markdown(config: GateConfig, result: dict, failures: list[str], notes: list[str]) -> str:
    detections = [r for r in result["rows"] if r.get("task") == "detect"]
    classifiers = [r for r in result["rows"] if r.get("task") != "detect"]
    budgets = ([f"top-1 drop <= {config.max_drop:g} points ({config.budget_on}), agreement >= {config.min_agreement:g}"] if classifiers else []) \
        + ([f"mAP drop <= {config.max_map_drop:g} points ({config.budget_on})"] if detections else [])
    lines = [f"## edgeeff quantization gate: {'FAILED' if failures else 'passed'}", "",
             f"Budget: {'; '.join(budgets)}; baseline `{config.baseline.name}`, tolerance {config.tolerance:g} points.", ""]
    if classifiers:
        lines += ["| variant | target | images | fp32 top-1 | int8 top-1 | drop (points) | paired 95% CI | McNemar p | agreement | baseline drop |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
    for r in classifiers:
        base = r.get("baseline_drop_points")
        lines.append(f"| {r['variant']} | {r['target']} | {r['images']} | {r['fp32_top1']:.1%} | {r['quantized_top1']:.1%} | "
                     f"{r['drop_points']:+.2f} | [{r['drop_ci95_points'][0]:+.2f}, {r['drop_ci95_points'][1]:+.2f}] | {r['mcnemar_p']:.3f} | "
                     f"{r['agreement']:.1%} | {'-' if base is None else f'{base:+.2f}'} |")
    if detections:
        lines += [""] * bool(classifiers) + ["| detector | target | images | fp32 mAP | int8 mAP | drop (points) | paired 95% CI (bootstrap over images) | "
                  "boxes matched | baseline drop |", "|---|---|---|---|---|---|---|---|---|"]
    for r, cells in zip(detections, detect_gate.table_rows(detections)):
        lines.append(f"| {r['variant']} | {r['target']} | {r['images']} | {r['fp32_map']:.3f} | {r['quantized_map']:.3f} | {cells['drop']} | "
                     f"{cells['ci']} | {cells['matched']} | {cells['baseline']} |")
    if failures:
        lines += ["", "**Failures**", ""] + [f"- {f}" for f in failures]
    if notes:
        lines += ["", "**Noise**", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
