"""Two figures of the measurement issue, through the CLI as users run it:

1. Harness speed: wall time of ``edgeeff eval`` of Lite0 ``tflite-int8`` over the 500 shared photos
   (images/s), and of ``edgeeff bench`` of one existing artifact with default settings.
2. Cost as the compound rule grows: B0..B3 and Lite0..Lite2 (and any custom phi) on ``tflite-fp32``
   and ``tflite-int8``, measured side by side in one ``edgeeff bench`` per variant, beside
   resolution, parameters and multiply-adds; top-1 where real weights exist
   (``benchmarks/results/accuracy_real_weights.json``). B0-B3 run with random weights: latency does
   not depend on the values, and ImageNet weights for them need a download.

Usage: python benchmarks/harness_and_scaling.py [--images DIR] [--variants b0,b1,b2,b3,lite0,lite1,lite2]
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
SHARED = ROOT.parent / "shared/data/imagenet-sample/images"


def edgeeff(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edgeeff.cli", *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"edgeeff {' '.join(args)} failed: {done.stderr[-800:]}")
    return wall, done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=str(SHARED))
    ap.add_argument("--variants", default="b0,b1,b2,b3,lite0,lite1,lite2")
    ap.add_argument("--out", default=str(ROOT / "edgeeff-out"))
    args = ap.parse_args()

    from edgeeff import fsio
    from edgeeff.report import environment, to_markdown

    work = Path(tempfile.mkdtemp(prefix="edgeeff-scaling-"))
    report: dict = {"environment": environment(), "cores": os.cpu_count()}

    # 1. Harness speed (the artifact is converted first, untimed)
    edgeeff("convert", "--variant", "lite0", "--target", "tflite-int8", "--out", args.out)
    artifact = Path(args.out) / "lite0-tflite-int8"
    wall, done = edgeeff("eval", str(artifact), "--images", args.images, "--json", str(work / "eval.json"))
    rows = json.loads((work / "eval.json").read_text())["rows"]
    report["eval"] = {"wall_s": round(wall, 1), "images": rows[0].get("images"), "images_per_s": round(rows[0].get("images", 0) / wall, 1),
                      "top1": rows[0].get("top1"), "agreement": rows[0].get("top1_agreement")}
    wall, done = edgeeff("bench", "--variant", "lite0", "--targets", "tflite-int8", "--out", args.out, "--json", str(work / "one.json"))
    report["bench_one_artifact"] = {"wall_s": round(wall, 1), "median_ms": json.loads((work / "one.json").read_text())["rows"][0].get("median_ms")}
    print(json.dumps(report["eval"]), json.dumps(report["bench_one_artifact"]), flush=True)

    # 2. Cost against the compound rule
    accuracy = {r["variant"]: r for r in json.loads((ROOT / "benchmarks/results/accuracy_real_weights.json").read_text())["rows"]}
    _, done = edgeeff("models", "--json", str(work / "models.json"), *[a for v in args.variants.split(",") for a in ("--variant", v)])
    models = {r["variant"]: r for r in json.loads((work / "models.json").read_text())["rows"]}
    scaling = []
    for variant in args.variants.split(","):
        weights = "none" if variant not in accuracy else accuracy[variant]["weights"]
        _, done = edgeeff("bench", "--variant", variant, "--weights", weights, "--targets", "tflite-fp32,tflite-int8",
                          "--out", str(work / "artifacts"), "--json", str(work / f"{variant}.json"))
        rows = {r["target"]: r for r in json.loads((work / f"{variant}.json").read_text())["rows"]}
        m = models.get(variant, {})
        row = {"variant": variant, "resolution": m.get("resolution"), "params": m.get("params"), "gmacs": m.get("gmacs"),
               "weights": weights, "top1_keras_sample": accuracy.get(variant, {}).get("top1"),
               "fp32_median_ms": rows.get("tflite-fp32", {}).get("median_ms"), "int8_median_ms": rows.get("tflite-int8", {}).get("median_ms"),
               "int8_agreement": rows.get("tflite-int8", {}).get("agreement"), "error": rows.get("tflite-int8", {}).get("error")}
        scaling.append(row)
        print(json.dumps(row), flush=True)
    base = scaling[0]
    for row in scaling:
        if row["fp32_median_ms"] and base["fp32_median_ms"] and row["gmacs"] and base["gmacs"]:
            row["fp32_latency_x_first"] = row["fp32_median_ms"] / base["fp32_median_ms"]
            row["gmacs_x_first"] = row["gmacs"] / base["gmacs"]
    report["scaling"] = scaling

    stem = ROOT / "benchmarks/results/harness_and_scaling"
    fsio.write_text(stem.with_suffix(".json"), json.dumps(report, indent=2, default=str) + "\n")
    e, b = report["eval"], report["bench_one_artifact"]
    lines = [f"{environment()['processor']}, {os.cpu_count()} cores.", "",
             f"- `edgeeff eval lite0-tflite-int8 --images <500 photos>`: {e['wall_s']} s wall for {e['images']} images "
             f"({e['images_per_s']} images/s, process start, Keras reference and decoding included); top-1 {e['top1']}, agreement {e['agreement']}",
             f"- `edgeeff bench --variant lite0 --targets tflite-int8` (artifact present, default settings): {b['wall_s']} s wall, median {b['median_ms']:.2f} ms",
             ""]
    first = scaling[0]["variant"]
    lines.append(to_markdown(scaling, [
        ("variant", "variant"), ("resolution", "res"), ("params", "params"), ("gmacs", "GMACs"), ("top1_keras_sample", "top-1 (Keras, sample)"),
        ("fp32_median_ms", "tflite-fp32 ms"), ("int8_median_ms", "tflite-int8 ms"), ("int8_agreement", "int8 agreement (validation images of convert)"),
        ("gmacs_x_first", f"GMACs x {first}"), ("fp32_latency_x_first", f"fp32 latency x {first}")],
        {"params": ",", "gmacs": ".3f", "top1_keras_sample": ".3f", "fp32_median_ms": ".2f", "int8_median_ms": ".2f", "int8_agreement": ".3f",
         "gmacs_x_first": ".2f", "fp32_latency_x_first": ".2f"}).rstrip("\n"))
    fsio.write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
