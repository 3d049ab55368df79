"""What the float fallback costs in speed, measured side by side: for each variant and backend, the
fp32 artifact, plain int8 and the budgeted int8 (``benchmarks/sensitivity.sh``'s ``--max-drop``
result in ``.bench-budget/``), with the accuracy figures from the budget records beside them. Each
round times the three side by side (``--method side-by-side``, the default: one process each,
alternating blocks of runs, ``edgeeff.measure.side_by_side``) or one fresh process after another
(``--method fresh``, the earlier tables); on a shared host the second sees a different machine state
in each process and moves a ratio close to 1 by 5-10 points between sittings.

The budget search itself times its result in 3 rounds while it works; on a shared 2-core machine
that is too few to tell 90 % from 100 % of the speedup kept, so this re-measures in more rounds,
alone. fp32 and plain int8 are converted again with the same calibration (the same content key as
the budget's own plain trial).

    python benchmarks/budget_latency.py --variants lite0,lite1,lite2 --rounds 7

Writes ``benchmarks/results/sensitivity/budget_latency.{json,md}`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import asdict
from pathlib import Path

from edgeeff import fsio, report
from edgeeff.convert import convert
from edgeeff.measure import Schedule, interleaved_rounds
from edgeeff.quant.sensitivity import settings_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sensitivity"
LISTS = ROOT / ".bench-lists"
SCHEDULE = Schedule(warmup_runs=10, warmup_seconds=1.0, min_runs=50, min_seconds=3.0)
# side by side, each block is timed under the same machine state as its neighbours: fewer runs do
SIDE_BY_SIDE = Schedule(warmup_runs=10, warmup_seconds=0.5, min_runs=64, min_seconds=1.5)


def artifacts(variant: str, target: str) -> tuple[dict, dict, Path, dict]:
    record = json.loads((RESULTS / f"{variant}-{target}-budget.json").read_text())["metadata"]
    budgeted = ROOT / ".bench-budget" / Path(record["path"]).name
    backend = target.split("-")[0]
    common = dict(weights=record["weights"]["label"], images=LISTS / "eval150.txt")
    fp32 = convert(variant, f"{backend}-fp32", out=ROOT / ".bench-plain", **common)
    plain = convert(variant, target, out=ROOT / ".bench-plain", calibration=LISTS / "cal.txt", require_valid=False, **common)
    if not _same_artifact(budgeted, record):
        # a fresh checkout has the records but not the artifacts: rebuild the search's result from the
        # options it recorded (its float blocks and adopted settings) with the same calibration
        budgeted = Path(convert(variant, target, out=ROOT / ".bench-budget", calibration=LISTS / "cal.txt", options=record["options"],
                                require_valid=False, **common)["path"])
    return fp32, plain, budgeted, record


def _same_artifact(path: Path, record: dict) -> bool:
    meta = path / "edgeeff.json"
    return meta.is_file() and json.loads(meta.read_text()).get("options") == record["options"]


def isa() -> str:
    """The int8 instruction set decides what a float fallback costs (VNNI makes int8 convolutions far
    cheaper than AVX2's multiply-add chains), so the table names it."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "unknown ISA"
    for flag, name in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2, no VNNI")):
        if flag in flags:
            return name
    return "no AVX2"


def publish(stem: str, head: str, rows: list[dict], cols: list[tuple[str, str]], **extra) -> None:
    """A results table as ``RESULTS/stem.json`` (rows and run settings) and ``.md`` (head + table), both atomic."""
    report.write_json(RESULTS / f"{stem}.json", rows, **extra)
    fsio.write_text(RESULTS / f"{stem}.md", head + report.to_markdown(rows, cols) + "\n")
    print(report.to_markdown(rows, cols))


def merged(rows: list[dict], stem: str) -> list[dict]:
    """This run's rows, with the recorded rows of cases it did not re-measure (each row says its rounds)."""
    path = RESULTS / f"{stem}.json"
    done = {(r["variant"], r["target"]) for r in rows}
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    keep = [r for r in old if (r["variant"], r["target"]) not in done]
    return sorted(keep + rows, key=lambda r: (r["variant"], r["target"].split("-")[0] != "openvino", r["target"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="lite0,lite1,lite2")
    ap.add_argument("--targets", default="openvino-int8,onnx-int8,tflite-int8")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", choices=("side-by-side", "fresh"), default="side-by-side")
    ap.add_argument("--stem", default="budget_latency", help="results file name: one per machine (budget_latency_avx2 ...)")
    args = ap.parse_args()
    cases = []
    for variant in args.variants.split(","):
        for target in args.targets.split(","):
            if (RESULTS / f"{variant}-{target}-budget.json").is_file():
                fp32, plain, budgeted, record = artifacts(variant, target)
                cases.append({"variant": variant, "target": target, "paths": [fp32["path"], plain["path"], str(budgeted)],
                              "record": record})
    together = args.method == "side-by-side"
    times = interleaved_rounds([case["paths"] for case in cases], args.rounds, args.threads, SIDE_BY_SIDE if together else SCHEDULE,
                               together=together)
    cpu = isa()
    rows = []
    for case, (fp32_ms, plain_ms, budget_ms) in zip(cases, times):
        b = case["record"]["budget"]
        plain_step, result = b["steps"][0], b["result"]  # not steps[-1]: the backward pass may end on a rejected trial
        fp32_m, plain_m, budget_m = (statistics.median(x) for x in (fp32_ms, plain_ms, budget_ms))
        # per-round ratios: the same round's three measurements share the machine's state
        kept = statistics.median(p / q for p, q in zip(plain_ms, budget_ms))
        rows.append({
            "variant": case["variant"], "target": case["target"], "isa": cpu,
            "settings": settings_text(b.get("settings")) or "-",
            "float_blocks": ", ".join(b["float_blocks"]) or "-",
            "float_macs_pct": round(100 * b.get("float_macs_fraction", 0.0), 1),
            "top1_fp32": round(100 * plain_step["top1_fp32"], 1),
            "plain_drop": round(plain_step["drop_points"], 2), "plain_agreement": round(100 * plain_step["agreement"], 1),
            "budget_drop": round(result["drop_points"], 2),
            "budget_drop_ci95": [round(x, 2) for x in result.get("drop_ci95_points", [])],
            "budget_agreement": round(100 * result["agreement"], 1),
            "fp32_ms": round(fp32_m, 2), "plain_ms": round(plain_m, 2), "budget_ms": round(budget_m, 2),
            "plain_speedup": round(fp32_m / plain_m, 2), "budget_speedup": round(fp32_m / budget_m, 2),
            "kept_pct": round(100 * kept), "rounds": len(budget_ms), "method": args.method,
        })
    cols = [("variant", "variant"), ("target", "target"), ("top1_fp32", "fp32 top-1 %"), ("plain_drop", "plain drop (pts)"),
            ("plain_agreement", "plain agr. %"), ("settings", "settings"), ("float_blocks", "kept in float"), ("float_macs_pct", "float MACs %"),
            ("budget_drop", "budgeted drop (pts)"), ("budget_drop_ci95", "paired 95% CI"), ("budget_agreement", "budgeted agr. %"),
            ("fp32_ms", "fp32 ms"), ("plain_ms", "plain int8 ms"), ("budget_ms", "budgeted ms"), ("plain_speedup", "plain x fp32"),
            ("budget_speedup", "budgeted x fp32"), ("kept_pct", "speedup kept %"), ("rounds", "rounds"), ("method", "timing"), ("isa", "CPU int8 ISA")]
    rows = merged(rows, args.stem)
    head = (f"# Float fallback to `--max-drop 0.3`: accuracy and latency, plain vs budgeted int8\n\n"
            f"Shared sample, seeded 20/80 split: 103 calibration, 397 evaluation photos (drops and agreement from the budget "
            f"search on all 397; one photo = 0.25 points). Latency: batch 1, {args.threads} threads, median over {args.rounds} "
            f"rounds (the row's `rounds`) on this machine ({cpu}, {os.cpu_count()} cores), "
            + ("each round fp32, plain and budgeted int8 side by side (one process each, alternating blocks of runs)"
               if args.method == "side-by-side" else "interleaved rounds of fresh processes")
            + "; 'speedup kept' = median over rounds of plain int8 ms / budgeted ms.\n\n")
    publish(args.stem, head, rows, cols, rounds=args.rounds, threads=args.threads, schedule=asdict(SIDE_BY_SIDE if together else SCHEDULE), method=args.method)


if __name__ == "__main__":
    main()
