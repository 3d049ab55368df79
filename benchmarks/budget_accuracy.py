"""Are the budgets still met on *this* CPU? Re-scores the plain and the budgeted int8 artifacts that
``benchmarks/budget_latency.py`` timed (``.bench-plain/``, ``.bench-budget/``) on all 397 evaluation
images, against the Keras fp32 model, with the paired 95 % interval of the top-1 drop.

Why: the budget records come from searches run on one machine; an int8 runtime's numbers depend on
the CPU's int8 instructions (AVX2's saturating multiply-adds vs VNNI), and on near-tie images one
changed prediction is 0.25 points. The Keras logits are computed once per variant and reused.

    python benchmarks/budget_latency.py --variants lite0,lite1,lite2 --rounds 7   # builds the artifacts
    python benchmarks/budget_accuracy.py --variants lite0,lite1,lite2
    python benchmarks/budget_accuracy.py --variants lite0 --targets onnx-int8 --stem budget_accuracy_avx2  # one row again

Writes ``benchmarks/results/sensitivity/budget_accuracy.{json,md}`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from edgeeff.artifact import open_artifact, reference_model
from edgeeff.data.images import list_samples
from edgeeff.evaluate import paired_drop, score_pair
from edgeeff.data.preprocess import PreprocessCard
from edgeeff.quant.sensitivity import settings_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_latency import LISTS, ROOT, isa, merged, publish  # noqa: E402


class OnceLogits:
    """The reference model's logits, computed on the first pass over the images and replayed on the
    next ones (score_pair decodes the same batches in the same order each time)."""

    def __init__(self, model) -> None:
        self.model, self.seen, self.at = model, [], 0

    def rewind(self) -> None:
        self.at = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.at == len(self.seen):
            self.seen.append(self.model.predict(images, verbose=0))
        self.at += 1
        return self.seen[self.at - 1]


def score(path: Path, reference: OnceLogits, samples: list, threads: int) -> dict:
    meta, runner = open_artifact(path, threads)
    reference.rewind()
    try:
        result = score_pair(runner.predict, reference, samples, meta["preprocessing"]["resolution"],
                            PreprocessCard.from_dict(meta["preprocessing"]))
    finally:
        if hasattr(runner, "close"):
            runner.close()
    drop = paired_drop(result["reference_correct"], result["correct"])
    return {"top1": result["top1"], "top1_fp32": result["reference_top1"], "agreement": result["top1_agreement"],
            "drop": drop["drop_points"], "ci": drop["ci95_points"], "options": meta.get("options", {}),
            # what is float: the blocks asked for, or the convolutions NNCF's accuracy control reverted
            "float": meta.get("options", {}).get("float_blocks") or meta["conversion"].get("accuracy_control", {}).get("float_layers", [])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="lite0,lite1,lite2")
    ap.add_argument("--targets", default="openvino-int8,onnx-int8,tflite-int8")
    ap.add_argument("--max-drop", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--stem", default="budget_accuracy", help="results file name: one per machine (budget_accuracy_avx2 ...)")
    args = ap.parse_args()
    samples = list_samples(LISTS / "eval.txt")
    cpu = isa()
    rows = []
    for variant in args.variants.split(","):
        reference = None
        for target in args.targets.split(","):
            plain, budgeted = ROOT / ".bench-plain" / f"{variant}-{target}", ROOT / ".bench-budget" / f"{variant}-{target}"
            if not (plain / "edgeeff.json").is_file() or not (budgeted / "edgeeff.json").is_file():
                print(f"{variant} {target}: no artifacts; run benchmarks/budget_latency.py first", file=sys.stderr)
                continue
            if reference is None:
                reference = OnceLogits(reference_model(json.loads((plain / "edgeeff.json").read_text())))
            print(f"{variant} {target}", flush=True)
            p, b = score(plain, reference, samples, args.threads), score(budgeted, reference, samples, args.threads)
            rows.append({
                "variant": variant, "target": target, "isa": cpu, "images": len(samples),
                "top1_fp32": round(100 * p["top1_fp32"], 1),
                "plain_drop": round(p["drop"], 2), "plain_ci95": [round(x, 2) for x in p["ci"]], "plain_agreement": round(100 * p["agreement"], 1),
                "budget_options": settings_text({k: v for k, v in b["options"].items() if k != "float_blocks"}) or "-",
                "float_blocks": ", ".join(b["float"]) or "-",
                "budget_drop": round(b["drop"], 2), "budget_ci95": [round(x, 2) for x in b["ci"]],
                "budget_agreement": round(100 * b["agreement"], 1), "meets": b["drop"] <= args.max_drop + 1e-9,
            })
    cols = [("variant", "variant"), ("target", "target"), ("top1_fp32", "fp32 top-1 %"), ("plain_drop", "plain drop (pts)"),
            ("plain_ci95", "plain 95% CI"), ("plain_agreement", "plain agr. %"), ("budget_options", "settings"),
            ("float_blocks", "kept in float"), ("budget_drop", "budgeted drop (pts)"), ("budget_ci95", "budgeted 95% CI"),
            ("budget_agreement", "budgeted agr. %"), ("meets", f"<= {args.max_drop} pts"), ("isa", "CPU int8 ISA")]
    head = (f"# The budgeted artifacts re-scored on this machine ({cpu}, {os.cpu_count()} cores)\n\n"
            f"{len(samples)} evaluation photos of the shared sample (one photo = {100 / len(samples):.2f} points), against the "
            f"Keras fp32 model; the artifacts are the ones `budget_latency.py` timed (rebuilt from the budget records' options where "
            f"the search's own artifact was not on disk).\n\n")
    publish(args.stem, head, merged(rows, args.stem), cols, max_drop=args.max_drop)


if __name__ == "__main__":
    main()
