"""Detector validation: does ``edgeeff convert`` refuse broken int8 detectors and pass healthy ones?

The trained Lite0 detector (``benchmarks/models/efficientdet-lite0-scenes``) is converted to each int8
target twice: ``healthy``, calibrated on 64 training scenes of the seeded detection set, and
``noise-calibrated``, calibrated on 32 images of uniform noise (activation ranges no scene has: a
broken artifact). Both are validated on the 96 held-out scenes, as ``convert --images`` does, and
scored on the same scenes' labels by ``edgeeff eval`` (COCO mAP through pycocotools). The table is the
evidence for the rules of ``edgeeff.detect.validate_detector``.

    python benchmarks/detector_validation.py    # about 20 min on 2 cores

Writes benchmarks/results/detector_validation.{json,md} atomically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from int8_recipes import SHARED, RESULTS, TARGETS, noise_folder  # noqa: E402

DETECTOR = ROOT / "benchmarks" / "models" / "efficientdet-lite0-scenes"


def render(payload: dict) -> None:
    from edgeeff import fsio, report

    rules = payload["rules"]
    table = [{**r, "cosine": f"{r['class_logit_cosine']:.4f}", "matched": f"{report.percent(r['matched'])} of {r['reference_boxes']}",
              "iou": f"{r['matched_iou_mean']:.3f}", "vs_keras": report.percent(r["map_vs_reference"]), "map": report.percent(r["map"]),
              "refused": "; ".join(r["failures"]) or "no"} for r in payload["rows"]]
    md = [f"Detector validation on {payload['cpu']} ({payload['cpu_profile']}): the trained Lite0 detector "
          f"(Keras fp32 mAP {report.percent(payload['keras_map'])} on the {payload['held_out_images']} held-out scenes), each int8 "
          "target calibrated on 64 training scenes (healthy) or on 32 images of uniform noise (broken), validated on the held-out "
          f"scenes as `convert --images` does. Rules: class-logit cosine >= {rules['min_logit_cosine']}; with {rules['min_boxes']}+ "
          f"confident Keras boxes, found again >= {rules['min_matched']:.0%} and mAP against Keras's boxes >= "
          f"{rules['min_map_vs_reference']:.0%}. mAP: against the labels (`edgeeff eval`). `benchmarks/detector_validation.py`.\n",
          report.to_markdown(table, [("target", "target"), ("artifact", "artifact"), ("cosine", "class-logit cosine"),
                                     ("matched", "Keras boxes found again"), ("iou", "their mean IoU"),
                                     ("vs_keras", "mAP vs Keras boxes"), ("map", "mAP (labels)"), ("refused", "refused by validation")])]
    fsio.write_text(RESULTS / "detector_validation.md", "\n".join(md) + "\n")


def main() -> int:
    if sys.argv[1:] == ["--render"]:
        render(json.loads((RESULTS / "detector_validation.json").read_text()))
        return 0
    from edgeeff import detect, report
    from edgeeff.convert import convert
    from edgeeff.data.detection import generate_split
    from edgeeff.devices.cpu import local_profile
    from edgeeff.kit import probe as kit_probe

    rows, keras_map = [], None
    with tempfile.TemporaryDirectory(prefix="edgeeff-detval-") as tmp:
        tmp = Path(tmp)
        scenes = generate_split(SHARED / "images", tmp / "scenes", train_count=64, held_out_count=96, seed=0)
        noise = noise_folder(tmp)
        held_out = scenes["held-out"].parent / "images"
        for target in TARGETS:
            for artifact, calibration in (("healthy", scenes["train"].parent / "images"), ("noise-calibrated", noise)):
                print(f"{target} {artifact}", file=sys.stderr, flush=True)
                meta = convert("efficientdet-lite0", target, weights=str(DETECTOR), out=tmp / artifact, calibration=calibration,
                               images=held_out, require_valid=False, force=True)
                scored = tmp / f"{target}-{artifact}.json"
                done = subprocess.run([sys.executable, "-m", "edgeeff.cli", "eval", meta["path"], "--images", str(scenes["held-out"]),
                                       "--json", str(scored)], capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"eval failed: {done.stderr[-2000:]}")
                labels = json.loads(scored.read_text())["rows"][0]
                keras_map = labels["reference_map"]
                val, boxes = meta["validation"], meta["validation"]["boxes"]
                row = {"target": target, "artifact": artifact, "class_logit_cosine": val["class_logit_cosine"],
                       "reference_boxes": boxes["reference_boxes"], "matched": boxes["matched"], "matched_iou_mean": boxes["matched_iou_mean"],
                       "map_vs_reference": boxes["map_vs_reference"], "map": labels["map"], "map_drop_points": labels["map_drop_points"],
                       "failures": val["failures"], "calibration_images": meta["calibration"]["count"]}
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    rules = {"min_logit_cosine": detect.MIN_LOGIT_COSINE, "min_matched": detect.MIN_MATCHED, "min_boxes": detect.MATCH_GATE_MIN_BOXES,
             "min_map_vs_reference": detect.MIN_MAP_VS_REFERENCE}
    report.write_json(RESULTS / "detector_validation.json", rows, cpu=kit_probe.cpu_model(), cpu_profile=local_profile().name,
                      keras_map=keras_map, held_out_images=96, rules=rules)
    render(json.loads((RESULTS / "detector_validation.json").read_text()))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
