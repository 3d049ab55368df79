"""ONNX artifacts on this machine's CPU and on its NVIDIA GPU (onnxruntime's CUDA provider), side by side.

Runs where TensorFlow is absent: it needs numpy, onnxruntime-gpu and edgeeff itself (installed with
``--no-deps``). Input is the folder ``benchmarks/gpu_pack.py`` wrote: artifacts, the card-cropped
validation images, their labels and the Keras fp32 logits. What it checks, through the product's own
paths:

- accuracy: ``load_runner`` (the runner ``edgeeff eval --device gpu`` uses) on CPU and on GPU: top-1,
  agreement and cosine with Keras, max |GPU - CPU| logit difference, nodes per execution provider;
- latency: ``python -m edgeeff.measure --device cpu|gpu`` (the process ``edgeeff bench`` starts per
  measurement), in interleaved rounds, batch 1 and a larger batch;
- refusals: ``gpu_backends()`` and accelerators this build cannot reach (TensorRT without libnvinfer).

Usage: python benchmarks/gpu_onnx.py PACK_DIR OUT_DIR [--rounds 3] [--min-seconds 2] [--batches 1,32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path


def nvidia_smi() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def accuracy(folder: Path, data, device: str) -> dict:
    import numpy as np

    from edgeeff.kit import core as kit_core
    from edgeeff.evaluate import compare_logits

    meta = json.loads((folder / "edgeeff.json").read_text())
    t0 = time.perf_counter()
    runner = kit_core.load_runner("edgeeff.targets.onnx", folder / meta["artifact"], accelerator=device)
    init_s = time.perf_counter() - t0
    pixels = data["pixels"].astype(np.float32)
    t0 = time.perf_counter()
    logits = np.concatenate([runner.predict(pixels[i:i + 50]) for i in range(0, len(pixels), 50)])
    predict_s = time.perf_counter() - t0
    labels, keras = data["labels"], data["keras"]
    vs_keras = compare_logits(keras, logits)  # the figures conversion validation reports, computed the same way
    return {"target": meta["target"], "device": device, "images": len(pixels),
            "top1": float((logits.argmax(1) == labels).mean()), "top1_keras": float((keras.argmax(1) == labels).mean()),
            "agreement": vs_keras["top1_agreement"], "mean_cosine": vs_keras["mean_cosine"],
            "max_abs_diff_vs_keras": vs_keras["max_abs_diff"],
            "init_s": round(init_s, 3), "predict_s": round(predict_s, 3), "runner": runner.describe(), "_logits": logits}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pack")
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--devices", default="cpu,gpu")
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort

    from edgeeff.evaluate import compare_logits
    from edgeeff.devices.registry import get_device, gpu_backends
    from edgeeff.report import to_markdown
    from edgeeff.errors import EdgeeffError
    from edgeeff.measure import Schedule, measure_in_subprocess

    pack, out = Path(args.pack), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = dict(np.load(pack / "images.npz"))
    folders = sorted(p for p in pack.iterdir() if (p / "edgeeff.json").is_file())
    report: dict = {"machine": {"gpu": nvidia_smi(), "cpu_cores": os.cpu_count(), "python": platform.python_version(),
                                "onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
                                "gpu_backends": gpu_backends()}}
    try:
        get_device("gpu").check()
        report["machine"]["device_gpu_check"] = "ok"
    except EdgeeffError as exc:
        report["machine"]["device_gpu_check"] = str(exc)
    print(json.dumps(report["machine"]), flush=True)

    rows = []
    for folder in folders:
        by_device = {}
        for device in args.devices.split(","):
            try:
                by_device[device] = accuracy(folder, data, device)
            except Exception as exc:  # a failure is a row: the report says what broke
                by_device[device] = {"target": folder.name, "device": device, "error": f"{type(exc).__name__}: {exc}"[:300]}
        if {"cpu", "gpu"} <= set(by_device) and all("_logits" in r for r in by_device.values()):
            gpu_vs_cpu = compare_logits(by_device["cpu"]["_logits"], by_device["gpu"]["_logits"])
            by_device["gpu"]["max_abs_diff_gpu_vs_cpu"] = gpu_vs_cpu["max_abs_diff"]
            by_device["gpu"]["top1_agreement_gpu_vs_cpu"] = gpu_vs_cpu["top1_agreement"]
        for r in by_device.values():
            r.pop("_logits", None)
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "runner"}), flush=True)
    report["accuracy"] = rows

    for accel in ("tensorrt",) if "gpu" in args.devices else ():  # reachable only with TensorRT's own libraries: the refusal must be one line
        r = measure_in_subprocess(folders[0], batch=1, schedule=Schedule(0, 0.0, 1, 0.0), device=accel)
        report.setdefault("refusals", {})[accel] = r.get("error") or {"ran": True, "runner": r.get("runner")}
        print(accel, json.dumps(report["refusals"][accel])[:400], flush=True)

    schedule = Schedule(warmup_runs=10, warmup_seconds=0.5, min_runs=50, min_seconds=args.min_seconds)
    batches = [int(b) for b in args.batches.split(",")]
    configs = [(f, d, b) for f in folders for d in args.devices.split(",") for b in batches]
    runs: dict = {c: [] for c in configs}
    for round_no in range(args.rounds):
        for config in configs:  # interleaved: every configuration once per round
            folder, device, batch = config
            r = measure_in_subprocess(folder, batch=batch, schedule=schedule, device=device)
            runs[config].append(r)
            print(f"round {round_no + 1} {folder.name} {device} b{batch}: {r.get('median_ms', r.get('error'))}", flush=True)
    latency = []
    for (folder, device, batch), results in runs.items():
        good = [r for r in results if "median_ms" in r]
        row = {"target": folder.name, "device": device, "batch": batch, "rounds": len(good)}
        if good:
            med = lambda key: float(np.median([r[key] for r in good]))  # noqa: E731
            row.update(median_ms=med("median_ms"), p90_ms=med("p90_ms"), p99_ms=med("p99_ms"), init_ms=med("init_ms"),
                       first_inference_ms=med("first_inference_ms"), throughput_ips=med("throughput_ips"),
                       peak_rss_mb=med("peak_rss_mb"), threads=good[0].get("threads"),
                       providers=good[0]["runner"].get("providers"), nodes_by_provider=good[0]["runner"].get("nodes_by_provider"))
        else:
            row["error"] = results[-1].get("error") if results else "not run"
        latency.append(row)
    for row in latency:  # the GPU's speedup over this machine's CPU, same artifact and batch
        cpu = next((r for r in latency if r["target"] == row["target"] and r["batch"] == row["batch"] and r["device"] == "cpu"), None)
        if cpu and cpu.get("median_ms") and row.get("median_ms"):
            row["speedup_vs_cpu"] = cpu["median_ms"] / row["median_ms"]
    report["latency"] = latency
    report["schedule"] = asdict(schedule)
    report["rounds"] = args.rounds
    (out / "gpu_onnx.json").write_text(json.dumps(report, indent=2, default=str) + "\n")

    def shown(row: dict, formats: dict, error_at: str) -> dict:
        """A row's cells as the tables print them; a failed row carries its error in one cell."""
        if "error" in row:
            return {**{k: "" for k in formats}, "target": row["target"], "device": row["device"], "batch": row.get("batch"),
                    error_at: f"error: {row['error']}"}
        return {**row, **{k: f(row) for k, f in formats.items()}}

    accuracy_cells = {"top1": lambda r: f"{100 * r['top1']:.1f}", "top1_keras": lambda r: f"{100 * r['top1_keras']:.1f}",
                      "agreement": lambda r: f"{100 * r['agreement']:.1f}", "mean_cosine": lambda r: f"{r['mean_cosine']:.4f}",
                      "gpu_vs_cpu": lambda r: str(r.get("max_abs_diff_gpu_vs_cpu", "-")),
                      "nodes": lambda r: str(r["runner"].get("nodes_by_provider", "-"))}
    latency_cells = {"median": lambda r: f"{r['median_ms']:.2f}", "p90": lambda r: f"{r['p90_ms']:.2f}", "init": lambda r: f"{r['init_ms']:.0f}",
                     "first": lambda r: f"{r['first_inference_ms']:.1f}", "ips": lambda r: f"{r['throughput_ips']:.0f}",
                     "x_cpu": lambda r: f"{r.get('speedup_vs_cpu', 1.0):.2f}", "rss": lambda r: f"{r['peak_rss_mb']:.0f}"}
    text = "\n".join([
        f"Lite0 (lite0-pypi) ONNX artifacts; GPU: {report['machine']['gpu']}; CPU: {os.cpu_count()} cores; "
        f"onnxruntime {ort.__version__}; {data['pixels'].shape[0]} validation images of the shared sample", "",
        to_markdown([shown(r, accuracy_cells, "top1") for r in rows],
                    [("target", "target"), ("device", "device"), ("top1", "top-1"), ("top1_keras", "top-1 Keras"), ("agreement", "agreement"),
                     ("mean_cosine", "cosine"), ("gpu_vs_cpu", "max abs diff GPU vs CPU"), ("nodes", "nodes by provider")]),
        f"Latency: median of {args.rounds} interleaved rounds, each a fresh `python -m edgeeff.measure` process", "",
        to_markdown([shown(r, latency_cells, "median") for r in latency],
                    [("target", "target"), ("device", "device"), ("batch", "batch"), ("median", "median ms"), ("p90", "p90 ms"),
                     ("init", "init ms"), ("first", "first inference ms"), ("ips", "images/s"), ("x_cpu", "x CPU"), ("rss", "peak RSS MB")]),
    ])
    (out / "gpu_onnx.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
