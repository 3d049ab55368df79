"""Int8 accuracy against calibration size and method, per backend: the evidence for the defaults.

Lite0 with real weights; the shared ImageNet sample split (seeded) into a calibration pool and a
disjoint evaluation set. For each (target, method, count) the script quantizes, then scores the
artifact and the Keras fp32 model on the same evaluation images: top-1, top-1 agreement, mean
cosine of the logits, and the tie count (top-2 output values equal in the artifact).

    python benchmarks/calibration_sweep.py --targets tflite-int8,onnx-int8 --counts 16,64,128,200
    python benchmarks/calibration_sweep.py --counts 10,64 --views 1,12 --out benchmarks/results/calibration_views
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "imagenet-sample"


def _option(pair: str) -> tuple[str, object]:
    key, value = pair.split(":")
    return key, {"true": True, "false": False}.get(value, value)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lite0")
    ap.add_argument("--weights", default="lite0-pypi")
    ap.add_argument("--targets", default="tflite-int8,onnx-int8,openvino-int8")
    ap.add_argument("--counts", default="16,64,128,200")
    ap.add_argument("--methods", default="", help="TARGET=key:value,key:value|key:value;... option sets per target "
                    "(e.g. onnx-int8=calibration_method:entropy); default: each target's defaults")
    ap.add_argument("--views", default="", help="views per calibration image to compare, e.g. 1,12 (default: the source's own choice)")
    ap.add_argument("--images", default=str(SHARED))
    ap.add_argument("--calib-fraction", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "calibration_sweep"))
    args = ap.parse_args()

    from edgeeff import fsio
    from edgeeff.api import build
    from edgeeff.calibration import from_samples
    from edgeeff.data.images import list_samples, split
    from edgeeff.evaluate import batches
    from edgeeff.targets.base import get_target, load_runner, versions
    from edgeeff.model.variants import resolve
    from edgeeff.convert import export_saved_model
    from edgeeff.evaluate import compare_logits
    from edgeeff.report import environment

    v = resolve(args.variant)
    model = build(v, weights=args.weights, classifier_activation=None)  # artifacts end at the logits
    card = model.edgeeff_weights.preprocessing
    pool, evaluation = split(list_samples(args.images), args.calib_fraction, args.seed)
    print(f"calibration pool {len(pool)}, evaluation {len(evaluation)}", flush=True)

    eval_x, eval_y = [], []
    for samples, batch, _ in batches(evaluation, v.resolution, card, batch=50):
        eval_x.append(batch)
        eval_y += [s.label for s in samples]
    eval_x = np.concatenate(eval_x)
    eval_y = np.array(eval_y)
    ref = np.asarray(model.predict(eval_x, batch_size=50, verbose=0))

    methods: dict[str, list[str | None]] = {}
    for part in filter(None, args.methods.split(";")):
        name, ms = part.split("=")
        methods[name] = ms.split("|")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        export_saved_model(model, saved)
        for target in args.targets.split(","):
            spec = get_target(target)
            module = spec.module()
            for method in methods.get(target, [None]):
                for count, views in [(int(c), int(w) if w else None) for c in args.counts.split(",") for w in args.views.split(",")]:
                    calib = from_samples(pool, "shared pool", v.resolution, card, count, args.seed, views=views)
                    calib.arrays()
                    options = dict(_option(pair) for pair in (method or "").split(",") if pair)
                    dest = Path(tmp) / f"{target}-{method}-{count}-{calib.views}{spec.suffix}"
                    start = time.perf_counter()
                    module.export(model, spec, dest, calib, options, saved_model=saved)
                    seconds = time.perf_counter() - start
                    runner = load_runner(spec, dest, threads=None)
                    out = np.concatenate([runner.predict(eval_x[i : i + 1]) for i in range(len(eval_x))])
                    top2 = np.sort(out, 1)[:, -2:]
                    figures = compare_logits(ref, out)
                    row = {
                        "target": target,
                        "method": method or "default",
                        "count": len(calib.samples),
                        "views": calib.views,
                        "top1_fp32": float((ref.argmax(1) == eval_y).mean()),
                        "top1": float((out.argmax(1) == eval_y).mean()),
                        "agreement": figures["top1_agreement"],
                        "mean_cosine": figures["mean_cosine"],
                        "max_abs_diff_probabilities": figures["max_abs_diff_probabilities"],
                        "top2_ties": int((top2[:, 0] == top2[:, 1]).sum()),
                        "convert_seconds": round(seconds, 1),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    report = {"variant": v.name, "weights": args.weights, "evaluation_images": len(evaluation), "calibration_pool": len(pool),
              "seed": args.seed, "environment": environment(), "versions": versions("tensorflow-cpu", "onnxruntime", "openvino", "nncf", "ai-edge-litert"),
              "rows": rows}
    fsio.write_text(Path(args.out + ".json"), json.dumps(report, indent=2) + "\n")
    lines = ["| target | method | calib images | views each | top-1 fp32 | top-1 int8 | agreement | mean cosine (logits) | top-2 ties | convert s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['method']} | {r['count']} | {r['views']} | {r['top1_fp32']:.1%} | {r['top1']:.1%} | {r['agreement']:.1%} "
                     f"| {r['mean_cosine']:.4f} | {r['top2_ties']} | {r['convert_seconds']} |")
    fsio.write_text(Path(args.out + ".md"), f"Lite0 ({args.weights}), {len(evaluation)} evaluation images, python {platform.python_version()}\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
