"""``edgeeff bench``: converts what is missing, then measures every target side by side.

Rounds are interleaved (each round visits every target once, each visit a fresh process), so
machine noise hits all targets alike; a target's figure is the median over rounds of its
per-process median. A target that fails to convert or to run keeps its row, with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgeeff.errors import EdgeeffError
from edgeeff.measure import Schedule, measure_in_subprocess

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


def measure_targets(artifacts: dict[str, dict], device: str, threads: int | None, batch: int, rounds: int, schedule: Schedule,
                    precision: str | None, say: Say) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {t: [] for t, meta in artifacts.items() if "error" not in meta}
    total = rounds * len(runs)
    step = 0
    for _ in range(rounds):
        for target in runs:
            step += 1
            say(f"measuring {target}", step, total)
            runs[target].append(measure_in_subprocess(artifacts[target]["path"], threads, batch, schedule, device=device,
                                                      precision=precision))
    return runs


def rows_from(artifacts: dict[str, dict], runs: dict[str, list[dict]], device: str) -> list[dict]:
    rows = []
    for target, meta in artifacts.items():
        row: dict = {"target": target, "device": device}
        if "error" in meta:
            row["error"] = meta["error"]
            rows.append(row)
            continue
        val = meta["validation"]
        row.update({
            "size_mb": round(meta["size_bytes"] / 1e6, 2),
            "top1": val.get("top1_artifact"),
            "top1_fp32": val.get("top1_keras"),
            "agreement": val.get("top1_agreement"),
            "validation_images": val.get("images"),
        })
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
            "versions": last.get("versions"),
            "cpu": last.get("cpu"),
            "executed_on": last["runner"].get("execution_devices") or last["runner"].get("providers") or device,
            "executed_precision": last["runner"].get("inference_precision") or meta["precision"],
        })
        rows.append(row)
    return add_speedups(rows)


def add_speedups(rows: list[dict]) -> list[dict]:
    """``speedup_vs_fp32``: the median latency of the same backend's fp32 target over this one's."""
    by_target = {r["target"]: r for r in rows}
    for row in rows:
        base = by_target.get(row["target"].rsplit("-", 1)[0] + "-fp32")
        if base and base.get("median_ms") and row.get("median_ms"):
            row["speedup_vs_fp32"] = base["median_ms"] / row["median_ms"]
    return rows


def pareto_plot(rows: list[dict], path: str | Path, title: str) -> Path:
    """Accuracy (top-1 if measured, else agreement with fp32) against median latency, labelled,
    with the Pareto frontier drawn; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeeff import fsio

    points = [(r["median_ms"], r["top1"] if r.get("top1") is not None else r.get("agreement"), r["target"])
              for r in rows if r.get("median_ms") and (r.get("top1") is not None or r.get("agreement") is not None)]
    if not points:
        raise EdgeeffError("nothing to plot: no target has both a latency and an accuracy figure")
    ylabel = "top-1 accuracy" if any(r.get("top1") is not None for r in rows) else "top-1 agreement with fp32"
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for number, (x, y, name) in enumerate(sorted(points)):
        ax.scatter(x, y * 100, s=30)
        # Targets often tie on accuracy (fp32 and fp16 siblings): stagger the labels so they stay legible.
        ax.annotate(name, (x, y * 100), textcoords="offset points", xytext=(5, (4, -11, 14)[number % 3]), fontsize=8)
    frontier, best = [], -1.0
    for x, y, _ in sorted(points):
        if y > best:
            frontier.append((x, y * 100))
            best = y
    ax.plot(*zip(*frontier), linestyle="--", linewidth=1, color="grey", label="Pareto frontier")
    ax.set_xlabel("median latency (ms, batch 1)")
    ax.set_ylabel(f"{ylabel} (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with fsio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
