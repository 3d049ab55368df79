"""A trained EfficientDet-Lite0 through every int8 target: COCO mAP on held-out scenes against the
Keras fp32 detector, and how many of its confident boxes each artifact finds again.

The detector is an ``edgeeff train-detect`` run on the composed scenes of ``edgeeff detection-set``
(benchmarks/models/README.md: the commands); calibration takes the recipe's count of training
scenes, scoring the held-out scenes (photos the training never showed). Conversion goes through
``edgeeff.convert.convert`` and scoring through ``edgeeff eval``'s detector job, the same code
users run.

    python benchmarks/detector_int8.py --run benchmarks/models/efficientdet-lite0-scenes --scenes DET_DIR
    python benchmarks/detector_int8.py --render-only
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NAME = "detector_int8"
TARGETS = ("onnx-fp32", "tflite-dynamic", "tflite-int8", "onnx-int8", "openvino-int8")


def cpu_text() -> str:
    from edgeeff.devices.cpu import local_profile

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    import os

    return f"{model}, {os.cpu_count()} cores, int8 profile {local_profile().name}"


def measure(run: Path, scenes: Path, targets, detector: str) -> dict:
    from edgeeff.accuracy import AccuracyJob
    from edgeeff.convert import convert
    from edgeeff.detect_eval import run_detect_eval
    from edgeeff.devices.registry import get_device

    device = get_device("cpu", None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeeff-det-bench-") as out:
        for target in targets:
            from edgeeff.targets.base import get_target

            calibration = scenes / "train" / "images" if get_target(target).needs_calibration else None
            meta = convert(detector, target, weights=str(run), out=out, calibration=calibration,
                           images=scenes / "held-out" / "images", require_valid=False)
            job = AccuracyJob(artifact=Path(meta["path"]), images=scenes / "held-out" / "annotations.json", batch=8)
            done = run_detect_eval(job, device)
            boxes = meta["validation"]["boxes"]
            rows.append({
                "target": target, "size_mb": round(meta["size_bytes"] / 1e6, 2), "conversion_s": meta["conversion_seconds"],
                "map": round(done.row["map"], 4), "reference_map": round(done.row["reference_map"], 4),
                "map_drop_points": round(done.row["map_drop_points"], 2), "ap50": round(done.row["ap50"], 4),
                "reference_ap50": round(done.row["reference_ap50"], 4),
                "boxes_found_again": boxes["matched"], "reference_boxes": boxes["reference_boxes"],
                "matched_iou_mean": None if boxes["matched_iou_mean"] is None else round(boxes["matched_iou_mean"], 4),
                "map_vs_reference": None if boxes["map_vs_reference"] is None else round(boxes["map_vs_reference"], 4),
                "runtime_ms": round(done.row["runtime_ms"], 2), "postprocess_ms": round(done.row["postprocess_ms"], 2),
                "validation_failures": meta["validation"]["failures"],
                "calibration_images": (meta.get("calibration") or {}).get("count"),
            })
            print(json.dumps(rows[-1]))
    card = json.loads((run / "edgeeff-run.json").read_text())
    return {"detector": detector, "image_size": card["image_size"], "run": {k: card[k] for k in ("epochs", "train_images",
            "held_out_images", "map", "ap50", "freeze_backbone", "started_from")}, "held_out_images": card["held_out_images"],
            "cpu": cpu_text(), "date": time.strftime("%Y-%m-%d"), "rows": rows}


def render(data: dict) -> str:
    from edgeeff import report

    columns = [("target", "target"), ("size_mb", "size (MB)"), ("map", "mAP"), ("reference_map", "Keras fp32 mAP"),
               ("map_drop_points", "mAP drop (pts)"), ("ap50", "AP50"), ("boxes_found_again", "Keras boxes found again"),
               ("matched_iou_mean", "their mean IoU"), ("map_vs_reference", "mAP vs Keras boxes"),
               ("runtime_ms", "runtime ms"), ("postprocess_ms", "post-processing ms"), ("conversion_s", "conversion s")]
    ref = data["rows"][0]["reference_boxes"] if data["rows"] else 0
    return "\n".join([
        f"# {data['detector']} ({data['image_size']} px) through the int8 targets",
        "",
        f"Measured {data['date']} on {data['cpu']}. The detector: `edgeeff train-detect`, {data['run']['epochs']} epochs on "
        f"{data['run']['train_images']} composed scenes, backbone frozen with {data['run']['started_from']} weights. "
        f"Scored on {data['held_out_images']} held-out scenes (photos training never showed) by pycocotools; "
        f"calibration on training scenes. \"Found again\": the share of the Keras detector's {ref} confident boxes "
        "(score 0.3 and above) that the artifact detects with the same class at IoU 0.5 or more. Runtime ms: one image per "
        "call, targets measured one after another (not side by side; `edgeeff bench` compares latency). Post-processing "
        "(decoding and NMS in numpy) runs after the runtime, the same for every target."
        + (f" Conditions: {data['conditions']}." if data.get("conditions") else ""),
        "",
        report.to_markdown(data["rows"], columns).rstrip(),
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "benchmarks" / "models" / "efficientdet-lite0-scenes")
    parser.add_argument("--scenes", type=Path, help="edgeeff detection-set output (train/ and held-out/)")
    parser.add_argument("--detector", default="efficientdet-lite0")
    parser.add_argument("--targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    record = RESULTS / f"{NAME}.json"
    if args.render_only:
        data = json.loads(record.read_text())
    else:
        if args.scenes is None:
            parser.error("--scenes is required (edgeeff detection-set IMAGES --out DIR --train 960 --held-out 96)")
        data = measure(args.run, args.scenes, args.targets, args.detector)
        record.write_text(json.dumps(data, indent=1) + "\n")
    (RESULTS / f"{NAME}.md").write_text(render(data))
    print(render(data))


if __name__ == "__main__":
    main()
