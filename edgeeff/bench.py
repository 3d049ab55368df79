"""``edgeeff bench``: converts what is missing, then measures every target side by side.

Rounds are interleaved (each round visits every target once, each visit a fresh process), so
machine noise hits all targets alike; a target's figure is the median over rounds of its
per-process median. A target that fails to convert or to run keeps its row, with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgeeff import report

from edgeeff.kit import core as kit_core

from edgeeff.errors import EdgeeffError
from edgeeff.measure import Schedule

Say = Callable[..., None]


def ensure_artifacts(variant: str, weights: str, targets: list[str], out: Path, images: str | None, calibration: str | None,
                     seed: int, say: Say) -> dict[str, dict]:
    """Target -> conversion metadata (reused when identical), or {"error": reason}."""
    from edgeeff.convert import convert

    done: dict[str, dict] = {}
    for number, target in enumerate(targets, 1):
        say(f"converting {target} ({number}/{len(targets)})")
        try:
            calib = calibration if target.endswith("int8") else None
            done[target] = convert(variant, target, weights=weights, out=out, calibration=calib, images=images, seed=seed)
        except EdgeeffError as exc:
            done[target] = {"error": str(exc)}
    return done


def given_artifacts(models: list[Path], scratch: Path, preprocessing: str | None) -> dict[str, dict]:
    """Row name -> metadata for artifacts and model files given as they are (bare files are wrapped
    under ``scratch``; ``edgeeff.imported``). A row is named by the file, with its runner's target."""
    from edgeeff.artifact import read_metadata, resolve_artifact

    done: dict[str, dict] = {}
    for path in models:
        folder = resolve_artifact(path, scratch, preprocessing)
        meta = read_metadata(folder)
        label = Path(path).name if meta.get("imported") else f"{Path(path).name} ({meta['target']})"
        while label in done:
            label += "'"
        done[label] = {**meta, "path": str(folder)}
    return done


Measure = Callable[[Path], dict]


def measure_targets(artifacts: dict[str, dict], measure: Measure, rounds: int, say: Say, label: str = "") -> dict[str, list[dict]]:
    """Interleaved rounds: each round visits every target once, each visit a fresh process (here,
    or on a remote device: ``measure`` decides)."""
    runs: dict[str, list[dict]] = {t: [] for t, meta in artifacts.items() if "error" not in meta}
    total = rounds * len(runs)
    step = 0
    for _ in range(rounds):
        for target in runs:
            step += 1
            say(f"measuring {target}{label}", step, total)
            runs[target].append(measure(Path(artifacts[target]["path"])))
    return runs


def target_fits_device(spec, accelerator: str) -> str | None:
    """Why a target cannot run on a device, or None: an Edge TPU model needs an Edge TPU, and the
    target's runtime must be able to use the device's accelerator (``ACCELERATORS`` of its module, the
    table the runners themselves refuse by), so nothing is converted, copied or timed in vain."""
    if spec.accelerator and spec.accelerator != accelerator:
        return f"{spec.name} runs only on a device with accelerator = \"{spec.accelerator}\""
    try:
        kit_core.accelerator_setting(accelerator, spec.module_name)
    except kit_core.RunnerError as exc:
        return f"{spec.name}: {exc}"
    return None


def measure_on_device(device, artifacts: dict[str, dict], threads: int | None, batch: int, rounds: int, schedule: Schedule,
                      precision: str | None, say: Say, label: str = "", accept_new_host_key: bool = False) -> tuple[list[dict], dict]:
    """Rows for one device and that device's own description (``probe``); an unreachable remote
    device gives every target a failed row and ``{"error": ...}`` as its description."""
    from edgeeff.targets.base import get_target

    try:
        session = device.connect(accept_new_host_key)
        say(f"connecting to {device.name}")
        info = session.probe()
    except EdgeeffError as exc:
        info = {"error": str(exc), **device.marks}
        return [{"target": t, "device": device.name, **device.marks, "error": str(exc)} for t in artifacts], info
    measure = lambda folder: session.measure(folder, threads, batch, schedule, precision)  # noqa: E731
    from edgeeff.devices.cpu import from_probe

    profile = from_probe(info)
    if profile is not None:
        info["cpu_profile"] = profile.name
    fitted = {}
    for target, meta in artifacts.items():
        why = None if "error" in meta else target_fits_device(get_target(meta.get("target", target)), device.accelerator)
        fitted[target] = {"error": why} if why else meta
    runs = measure_targets(fitted, measure, rounds, say, label)
    if session.uploaded_bytes is not None:
        info["uploaded_bytes"] = session.uploaded_bytes
    info.update(device.marks)
    return [{**row, **device.marks} for row in rows_from(fitted, runs, device.name, info)], info


def measure_on_devices(devices: list, artifacts: dict[str, dict], threads: int | None, batch: int, rounds: int, schedule: Schedule,
                       precision: str | None, say: Say, accept_new_host_key: bool = False) -> dict[str, tuple[list[dict], dict]]:
    """Remote devices at once (one thread each: the work happens on other machines); this
    machine's own devices (``cpu``, ``gpu``) one after another in a single thread, since timing two
    of them together would make each slow the other. Rows in the order the devices were named."""
    from concurrent.futures import ThreadPoolExecutor

    def one(device):
        label = f" on {device.name}" if len(devices) > 1 else ""
        return measure_on_device(device, artifacts, threads, batch, rounds, schedule, precision, say, label, accept_new_host_key)

    local = [d for d in devices if d.shares_this_machine]
    remote = [d for d in devices if not d.shares_this_machine]
    with ThreadPoolExecutor(max_workers=len(remote) + 1) as pool:
        futures = {d.name: pool.submit(one, d) for d in remote}
        local_done = pool.submit(lambda: {d.name: one(d) for d in local})
        done = {**local_done.result(), **{name: future.result() for name, future in futures.items()}}
    return {d.name: done[d.name] for d in devices}


def rows_from(artifacts: dict[str, dict], runs: dict[str, list[dict]], device: str, device_info: dict | None = None) -> list[dict]:
    from edgeeff.devices.cpu import from_probe, recipe_note

    profile = from_probe(device_info or {})
    rows = []
    for target, meta in artifacts.items():
        row: dict = {"target": target, "device": device, "cpu_profile": profile.name if profile else None,
                     "converted_for": (meta.get("cpu_profile") or {}).get("name")}
        note = recipe_note(meta, profile)
        if note:
            row["note"] = note
        if meta.get("imported"):
            row.update(runs_as=meta["target"], assumed=meta["imported"]["assumed"])
        if "error" in meta:
            row["error"] = meta["error"]
            rows.append(row)
            continue
        val = meta["validation"]
        row.update({
            "weights": report.weights_text((meta.get("weights") or {}).get("label")),
            "size_mb": round(meta["size_bytes"] / 1e6, 2),
            "top1": val.get("top1_artifact"),
            "top1_fp32": val.get("top1_keras"),
            "agreement": val.get("top1_agreement"),
            "validation_images": val.get("images"),
        })
        if meta.get("task") == "detect":  # a detector's validation: boxes found again and raw class logits, not top-1
            row.update(task="detect", boxes_matched=(val.get("boxes") or {}).get("matched"),
                       logit_cosine=val.get("class_logit_cosine"))
        good = [m for m in runs.get(target, []) if "error" not in m]
        if not good:
            failed = runs.get(target, [])
            row["error"] = failed[-1]["error"] if failed else "not measured"
            rows.append(row)
            continue
        med = lambda key: float(np.median([m[key] for m in good]))  # noqa: E731
        last = good[-1]
        row.update({
            "rounds": len(good),
            "median_ms": med("median_ms"), "p90_ms": med("p90_ms"), "p99_ms": med("p99_ms"),
            "min_ms": min(m["min_ms"] for m in good), "max_ms": max(m["max_ms"] for m in good), "std_ms": med("std_ms"),
            "throughput_ips": med("throughput_ips"), "init_ms": med("init_ms"), "first_inference_ms": med("first_inference_ms"),
            "peak_rss_mb": med("peak_rss_mb"), "batch": last["batch"], "threads": last["threads"],
            "runtime": last["runner"].get("runtime"),
            "versions": last.get("versions") or (device_info or {}).get("runtimes"),
            "cpu": last.get("cpu") or (device_info or {}).get("cpu"),
            "executed_on": last["runner"].get("executed_on", device),  # each runner says where its work ran
            "executed_precision": last["runner"].get("executed_precision") or meta["precision"],
        })
        rows.append(row)
    return add_speedups(rows)


def post_processing_of(meta: dict):
    """The :class:`edgeeff.model.postprocess.PostProcess` a detector artifact's metadata names."""
    from dataclasses import fields

    from edgeeff.model.postprocess import PostProcess

    given = meta["post_processing"]
    values = {f.name: given[f.name] for f in fields(PostProcess) if f.name in given}
    if "aspect_ratios" in values:
        values["aspect_ratios"] = tuple(values["aspect_ratios"])
    return PostProcess(**values)


def one_image(images: str | None) -> Path | None:
    """The first image of ``--images`` (a file or a folder), or None."""
    if not images:
        return None
    path = Path(images)
    if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
        return path
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if path.is_dir() else []
    return found[0] if found else None


def one_raw_output(artifacts: dict[str, dict], image: Path) -> tuple[np.ndarray, str]:
    """One image's raw detector output from the first artifact that runs here, and which one it was;
    a synthetic output (class logits at the 0.01 prior, zero regressions) when none does."""
    from edgeeff.artifact import open_artifact
    from edgeeff.data.preprocess import PreprocessCard, load_image

    for name, meta in artifacts.items():
        if "error" in meta:
            continue
        try:
            meta, runner = open_artifact(meta["path"], threads=1)
            card = PreprocessCard.from_dict(meta["preprocessing"])
            pixels = load_image(image, meta["preprocessing"]["resolution"], card)[None]
            return np.asarray(runner.predict(pixels)), f"{image.name} through {name}"
        except (EdgeeffError, kit_core.RunnerError, OSError, ImportError):
            continue
    meta = next(m for m in artifacts.values() if "error" not in m)
    raw = meta["raw_output"]
    out = np.zeros((1, raw["anchors"], 4 + raw["classes"]), np.float32)
    out[..., 4:] = -np.log(99.0)
    return out, "synthetic output (no artifact runs here)"


def post_processing_ms(post, raw: np.ndarray, schedule: Schedule | None = None) -> dict:
    """Median and p90 ms of ``post.apply`` on ``raw`` (one batch), numpy on this machine: a warm-up, then
    at least the schedule's runs and seconds (capped: the figure is the same for every target)."""
    import time

    from edgeeff.model.efficientdet import split_raw

    logits, regressions = split_raw(raw)
    post.apply(logits, regressions)  # anchors and first-call costs
    min_runs = min(schedule.min_runs, 30) if schedule else 30
    min_seconds = min(schedule.min_seconds, 1.0) if schedule else 1.0
    times: list[float] = []
    start = time.perf_counter_ns()
    while len(times) < min_runs or (time.perf_counter_ns() - start) / 1e9 < min_seconds:
        t0 = time.perf_counter_ns()
        post.apply(logits, regressions)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if len(times) >= 1000:
            break
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "runs": len(times)}


def add_post_processing(rows: list[dict], artifacts: dict[str, dict], image: Path, batch: int, schedule: Schedule | None = None) -> dict | None:
    """Detector rows get ``post_processing_ms`` (numpy, on this machine, after the runtime: the same
    figure for every target) and ``end_to_end_ms`` = runtime median + post-processing median; returns
    what was timed, or None for classifiers."""
    detectors = {name: meta for name, meta in artifacts.items() if meta.get("task") == "detect"}
    if not any("error" not in meta for meta in detectors.values()):
        return None
    raw, source = one_raw_output(detectors, image)
    raw = np.repeat(raw[:1], batch, axis=0)  # the runtime's figure is per batch: so is this one
    meta = next(m for m in detectors.values() if "error" not in m)
    timed = {**post_processing_ms(post_processing_of(meta), raw, schedule), "input": source, "batch": batch,
             "runs_on": "this machine, numpy (edgeeff.model.postprocess.PostProcess.apply), after the runtime"}
    for row in rows:
        if row["target"] in detectors and "error" not in detectors[row["target"]]:
            row["post_processing_ms"] = timed["median_ms"]
            if row.get("median_ms") is not None:
                row["end_to_end_ms"] = row["median_ms"] + timed["median_ms"]
    return timed


def detector_columns(columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The bench table's columns for detectors: box agreement and the class-logit cosine where a
    classifier shows top-1 agreement, post-processing and end-to-end time after the runtime's."""
    out = []
    for key, label in columns:
        if key == "agreement":
            out += [("boxes_matched", "boxes matched"), ("logit_cosine", "logit cosine")]
            continue
        out.append((key, label))
        if key == "p90_ms":
            out += [("post_processing_ms", "post-processing ms"), ("end_to_end_ms", "end to end ms")]
    return out


def add_speedups(rows: list[dict]) -> list[dict]:
    """``speedup_vs_fp32``: the median latency of the same backend's fp32 target over this one's
    (on the same device)."""
    by_target = {(r.get("device"), r["target"]): r for r in rows}
    for row in rows:
        base = by_target.get((row.get("device"), row["target"].rsplit("-", 1)[0] + "-fp32"))
        if base and base.get("median_ms") and row.get("median_ms"):
            row["speedup_vs_fp32"] = base["median_ms"] / row["median_ms"]
    return rows


def pareto_plot(rows: list[dict], path: str | Path, title: str) -> Path:
    """Accuracy (top-1 if measured, else agreement with fp32) against median latency, labelled,
    with the Pareto frontier drawn; written atomically."""
    several = len({r.get("device") for r in rows}) > 1  # one frontier per device: latencies of two machines don't compete
    def label(r: dict) -> str:
        name = f"{r['target']} @ {r.get('device')}" if several else r["target"]
        name += " (emulated: qemu's latency)" if r.get("emulated") else ""
        n = r.get("validation_images")  # a share says nothing without its n: 3/3 is not "100 %"
        if r.get("top1") is None and n:
            name += f" ({round(r['agreement'] * n)}/{n})"
        return name + (" [random weights]" if r.get("weights") == report.RANDOM_WEIGHTS else "")

    points = [(r["median_ms"], r["top1"] if r.get("top1") is not None else r.get("agreement"), label(r), r.get("device"))
              for r in rows if r.get("median_ms") and (r.get("top1") is not None or r.get("agreement") is not None)]
    if not points:
        raise EdgeeffError("nothing to plot: no target has both a latency and an accuracy figure")
    ylabel = ("top-1 accuracy" if any(r.get("top1") is not None for r in rows)
              else f"top-1 agreement with fp32 on {max(r.get('validation_images') or 0 for r in rows)} images")
    fig, ax = report.new_axes((7, 4.5))
    for number, (x, y, name, _) in enumerate(sorted(points)):
        ax.scatter(x, y * 100, s=30)
        # Targets often tie on accuracy (fp32 and fp16 siblings): stagger the labels so they stay legible.
        ax.annotate(name, (x, y * 100), textcoords="offset points", xytext=(5, (4, -11, 14)[number % 3]), fontsize=8)
    for device in dict.fromkeys(p[3] for p in points):
        frontier, best = [], -1.0
        for x, y, _, _ in sorted(p for p in points if p[3] == device):
            if y > best:
                frontier.append((x, y * 100))
                best = y
        ax.plot(*zip(*frontier), linestyle="--", linewidth=1, label=f"Pareto frontier, {device}" if several else "Pareto frontier",
                **({} if several else {"color": "grey"}))
    ax.set_xlabel("median latency (ms, batch 1)" + ("; emulated devices: the emulator's time, not a board's"
                                                     if any(r.get("emulated") for r in rows) else ""))
    ax.set_ylabel(f"{ylabel} (%)")
    return report.save_png(fig, ax, path, title)
