"""onnx-int8 quantization recipes (``--quant-types``) on this CPU, and the table of every CPU on record.

Lite0 (lite0-pypi) onnx-int8, one artifact per recipe, calibrated with the default count from the
210-image calibration part of the shared sample's seeded 40/60 split and scored by the conversion's
own validation against the Keras fp32 logits on the other 290 photos. Each run writes
``benchmarks/results/onnx_int8_recipes/<cpu>.json`` (rows labelled with their quant types; the CPU
model and its int8 instruction sets recorded); the Markdown table is then rendered from every JSON
there, so the table only shows what a record holds.

    python benchmarks/onnx_int8_recipes.py                       # measure here, then render
    python benchmarks/onnx_int8_recipes.py --render-only
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "imagenet-sample" / "images"
RESULTS = ROOT / "benchmarks" / "results" / "onnx_int8_recipes"
RECIPES = ("u8s8-reduced", "u8s8", "s8s8")


def cpu_features() -> dict:
    from edgeeff.kit import probe as kit_probe

    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    int8 = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-VNNI" if "avx_vnni" in flags else "AVX2, no VNNI" if "avx2" in flags else "no AVX2"
    return {"model": kit_probe.cpu_model(), "int8_instructions": int8, "amx": "amx_int8" in flags}


def measure(out: Path) -> Path:
    from edgeeff import fsio, report
    from edgeeff.convert import convert
    from edgeeff.data.images import list_samples, split, write_list
    from edgeeff.targets.base import versions

    if not SHARED.is_dir():
        sys.exit(f"onnx_int8_recipes: error: {SHARED} is missing")
    calib, evaluation = split(list_samples(SHARED), 0.4, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        calib_list, eval_list = write_list(calib, Path(tmp) / "calib.txt"), write_list(evaluation, Path(tmp) / "eval.txt")
        for recipe in RECIPES:
            meta = convert("lite0", "onnx-int8", weights="lite0-pypi", out=Path(tmp) / "out", calibration=calib_list, images=eval_list,
                           options={"quant_types": recipe}, require_valid=False)
            val = meta["validation"]
            rows.append({"quant_types": recipe, "images": val["images"], "top1_keras": val["top1_keras"], "top1": val["top1_artifact"],
                         "agreement": val["top1_agreement"], "mean_cosine": val["mean_cosine"],
                         "calibration_images": meta["calibration"]["count"]})
            print(f"{recipe}: agreement {val['top1_agreement']:.3f}", file=sys.stderr)
    cpu = cpu_features()
    name = re.sub(r"[^a-z0-9]+", "-", f"{cpu['model']}-{cpu['int8_instructions']}".lower()).strip("-")
    path = out / f"{name}.json"
    out.mkdir(parents=True, exist_ok=True)
    fsio.write_text(path, json.dumps({"rows": rows, "cpu": cpu, "environment": report.environment(),
                                      "versions": versions("onnxruntime", "tf2onnx", "onnx")}, indent=2) + "\n")
    return path


def render(out: Path) -> Path:
    from edgeeff import fsio

    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    if not records:
        sys.exit(f"onnx_int8_recipes: error: no records in {out}; measure first")
    keras = sorted({round(r["top1_keras"] * 100, 1) for rec in records for r in rec["rows"]})
    lines = ["# onnx-int8 recipes (`--quant-types`) per CPU", "",
             "Lite0 (lite0-pypi), default calibration count from the 210-image calibration split, scored against the Keras fp32 "
             "logits on the 290 held-out photos of the shared sample; written by `benchmarks/onnx_int8_recipes.py` from the "
             "JSON records beside this file.", "",
             "| CPU | int8 instructions | onnxruntime | quant types | images | top-1 | agreement | cosine |",
             "|---|---|---|---|---|---|---|---|"]
    for rec in records:
        for r in rec["rows"]:
            lines.append(f"| {rec['cpu']['model']} | {rec['cpu']['int8_instructions']} | {rec['versions'].get('onnxruntime', '-')} | "
                         f"{r['quant_types']} | {r['images']} | {r['top1'] * 100:.1f} | {r['agreement'] * 100:.1f} | {r['mean_cosine']:.4f} |")
    lines += ["", f"Keras fp32 top-1 on these photos: {', '.join(f'{k:.1f}' for k in keras)}."]
    return fsio.write_text(out / "README.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        print(f"wrote {measure(args.out)}", file=sys.stderr)
    print(f"wrote {render(args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
