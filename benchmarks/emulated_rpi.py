"""Accuracy of the ARM builds: Lite0 artifacts evaluated on the emulated Raspberry Pi
(``edgeeff devices emulate rpi``: Debian bookworm arm64, Cortex-A76 under qemu-user), each compared
with the Keras fp32 reference and, image by image, with the same artifact on this machine's CPU.

Under emulation the arithmetic is the ARM build's own (LiteRT's and onnxruntime's aarch64 kernels,
chosen from the CPU features qemu reports), so agreement is real; timing is not, and none is
recorded here except the wall time of each run (qemu's). Usage, after ``edgeeff devices emulate rpi``:

    python benchmarks/emulated_rpi.py --device rpi --count 200

Runs ``edgeeff eval ARTIFACT --device rpi --images LIST --compare-local --json ...`` per target (the
CLI a user runs) and writes benchmarks/results/emulated_rpi.{json,md} (atomically).
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

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample" / "images"


def image_list(folder: Path, count: int, path: Path) -> list[str]:
    """``count`` photos spread evenly over the sorted sample (so over the class range), as a label<TAB>path list."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if count > len(files):
        raise SystemExit(f"{folder} has {len(files)} photos, fewer than --count {count}")
    chosen = [files[round(i * (len(files) - 1) / max(count - 1, 1))] for i in range(count)]
    path.write_text("".join(f"{p.name.split('_')[0]}\t{p}\n" for p in chosen))
    return [p.name for p in chosen]


def main(argv: list[str]) -> int:
    from edgeeff import devicekit, fsio, report
    from edgeeff.bench import ensure_artifacts

    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="rpi")
    parser.add_argument("--devices-file", default=None)
    parser.add_argument("--variant", default="lite0")
    parser.add_argument("--weights", default="lite0-pypi")
    parser.add_argument("--targets", default="tflite-int8,tflite-fp32,onnx-int8")
    parser.add_argument("--images", type=Path, default=SAMPLE)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default="edgeeff-out", help="Artifact folder (reused, as bench's).")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    targets = args.targets.split(",")
    artifacts = ensure_artifacts(args.variant, args.weights, targets, Path(args.out), None, None, 0, say)
    failed = {t: m["error"] for t, m in artifacts.items() if "error" in m}
    if failed:
        raise SystemExit(f"conversion failed: {failed}")
    device_args = ["--device", args.device] + (["--devices-file", args.devices_file] if args.devices_file else [])
    rows, device_info, local_runners = [], None, {}
    with tempfile.TemporaryDirectory(prefix="emulated-rpi-") as scratch:
        listing = Path(scratch) / "images.txt"
        names = image_list(args.images, args.count, listing)
        check = Path(scratch) / "check.json"
        file_args = ["--devices-file", args.devices_file] if args.devices_file else []
        subprocess.run([sys.executable, "-m", "edgeeff.cli", "devices", "check", args.device, *file_args, "--json", str(check)], check=True,
                       capture_output=True)
        device_info = json.loads(check.read_text())["rows"][0]
        for target in targets:
            out = Path(scratch) / f"{target}.json"
            say(f"{target}: eval on {args.device} and locally, {len(names)} photos")
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "edgeeff.cli", "eval", artifacts[target]["path"], *device_args,
                                   "--images", str(listing), "--batch", str(args.batch), "--compare-local", "--show", "0", "--json", str(out)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{target}: eval failed: {done.stderr[-2000:]}")
            wall = time.perf_counter() - started
            result = json.loads(out.read_text())
            row, local = result["rows"][0], result["compare_local"]
            local_runners[target] = local["local_runner"]
            rows.append({
                "target": target, "images": row["images"], "emulated": row.get("emulated", False),
                "top1": row.get("top1"), "reference_top1": row.get("reference_top1"),
                "agreement_keras": row["top1_agreement"], "cosine_keras": row["mean_cosine"],
                "agreement_x86": local["top1_agreement"], "identical_x86": local["identical_outputs"],
                "cosine_x86": local["mean_cosine"], "min_cosine_x86": local["min_cosine"], "max_abs_diff_x86": local["max_abs_diff"],
                "disagreements_x86": local["disagreements"], "disagreements_keras": result["details"].get("disagreements", []),
                "device_runner": result["runner"], "eval_wall_s": round(wall, 1),
            })
            say(f"{target}: vs Keras {report.percent(row['top1_agreement'])}, vs x86 {report.percent(local['top1_agreement'])} "
                f"({len(local['disagreements'])} disagree, {local['identical_outputs']} identical), {wall:.0f} s")
    host = devicekit.probe()
    host_features = [f for f in host["cpu_features"] if f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")]
    payload = {
        "variant": args.variant, "weights": args.weights, "images": str(args.images), "image_count": len(names), "image_names": names,
        "device": args.device,
        "device_cpu": {k: device_info.get(k) for k in ("cpu", "machine", "cpu_features", "cpu_features_source", "python", "runtimes",
                                                         "distribution", "emulated")},
        "host_cpu": {"cpu": host["cpu"], "machine": host["machine"], "cpu_features_relevant": host_features, "runtimes": host["runtimes"]},
        "local_runners": local_runners,
        "note": "Under emulation only correctness is real: eval_wall_s is qemu's time (and includes the local and Keras runs), not a board's.",
    }
    args.results.mkdir(parents=True, exist_ok=True)
    report.write_json(args.results / "emulated_rpi.json", rows, **payload)
    columns = [("target", "target"), ("images", "images"), ("top1", "top-1 on device"), ("agreement_keras", "agrees with Keras"),
               ("agreement_x86", "agrees with x86"), ("identical_x86", "identical to x86"), ("cosine_x86", "cosine to x86"),
               ("max_abs_diff_x86", "max |diff| to x86")]
    table_rows = [{**r, "max_abs_diff_x86": round(r["max_abs_diff_x86"], 4), "cosine_x86": round(r["cosine_x86"], 6)} for r in rows]
    lines = [f"# {args.variant} ({args.weights}) on the emulated Raspberry Pi vs this machine's CPU",
             "",
             f"Device `{args.device}`: {device_info.get('distribution')}, {device_info.get('machine')}, Python {device_info.get('python')}, "
             f"runtimes {', '.join(f'{k} {v}' for k, v in device_info.get('runtimes', {}).items())}; CPU features reported "
             f"({device_info.get('cpu_features_source')}): {' '.join(device_info.get('cpu_features') or [])}. "
             f"**Emulated** (qemu-user): outputs are the ARM builds' own, timing is not a board's and is not reported.",
             "",
             f"Host: {host['cpu']} ({', '.join(host_features)}), runtimes "
             f"{', '.join(f'{k} {v}' for k, v in host['runtimes'].items() if k in ('ai-edge-litert', 'onnxruntime', 'numpy'))}.",
             "",
             f"{len(names)} photos of the shared ImageNet sample, spread evenly over its 500 (sorted by synset). "
             "`agrees with Keras`: top-1 of the device's run vs the Keras fp32 model; `agrees with x86`: top-1 of the device's run vs "
             "the same artifact on this machine (`eval --compare-local`); `identical`: images whose logits are bit-identical.",
             "",
             report.to_markdown(table_rows, columns).rstrip(),
             ""]
    for r in rows:
        if r["disagreements_x86"]:
            lines.append(f"- {r['target']}: device and x86 disagree on " + ", ".join(
                f"{d['file']} (device {d['device']}, x86 {d['local']})" for d in r["disagreements_x86"]))
        else:
            lines.append(f"- {r['target']}: device and x86 agree on every image")
    lines += ["", "Generated by `benchmarks/emulated_rpi.py`; data in `emulated_rpi.json`.", ""]
    fsio.write_text(args.results / "emulated_rpi.md", "\n".join(lines))
    say(f"wrote {args.results / 'emulated_rpi.json'} and .md")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main(sys.argv[1:]))
