"""The int8 figures of the test suite's own configuration, on record: the bounds in
tests/test_convert.py::test_int8_targets_calibrated_on_real_images come from this file.

Lite0 (lite0-pypi) at 128 px, the shared sample's seeded 40/60 split, the first 48 calibration and
the first 60 evaluation photos (as the test takes them), each int8 target with the test's options;
the conversion's own validation against Keras fp32. Adds this CPU's record to benchmarks/results/int8_small.{json,md}
(one record per CPU, with its int8 instructions).

    python benchmarks/int8_small.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_int8_recipes import SHARED, cpu_features  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
VARIANT = "lite0:resolution=128"
CASES = (("tflite-int8", {"io_dtype": "uint8"}), ("onnx-int8", {"calibration_method": "minmax"}), ("openvino-int8", {"preset": "performance"}))


def render(records: list[dict]) -> None:
    from edgeeff import fsio

    lines = [f"# Int8 at the test suite's configuration: {VARIANT}, 48 calibration / 60 evaluation photos", "",
             "One record per CPU; `benchmarks/int8_small.py`.", "",
             "| CPU | int8 instructions | target | options | agreement | cosine | top-1 (Keras) | top-1 |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {rec['cpu']['model']} | {rec['cpu']['int8_instructions']} | {r['target']} | {', '.join(f'{k}={v}' for k, v in r['options'].items())} | "
              f"{r['agreement'] * 100:.1f} | {r['mean_cosine']:.4f} | {r['top1_keras'] * 100:.1f} | {r['top1'] * 100:.1f} |"
              for rec in records for r in rec["rows"]]
    lines += [f"\n{rec['cpu']['model']}: {rec['note']}." for rec in records if rec.get("note")]
    fsio.write_text(OUT / "int8_small.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    if sys.argv[1:] == ["--render"]:
        render(json.loads((OUT / "int8_small.json").read_text())["records"])
        return
    from edgeeff import fsio, report
    from edgeeff.convert import convert
    from edgeeff.data.images import list_samples, split, write_list
    from edgeeff.targets.base import versions

    if not SHARED.is_dir():
        sys.exit(f"int8_small: error: {SHARED} is missing")
    calib, evaluation = split(list_samples(SHARED), 0.4, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        calib_list, eval_list = write_list(calib[:48], Path(tmp) / "calib.txt"), write_list(evaluation[:60], Path(tmp) / "eval.txt")
        for target, options in CASES:
            meta = convert(VARIANT, target, weights="lite0-pypi", out=Path(tmp) / "out", calibration=calib_list, images=eval_list,
                           options=options, require_valid=False)
            val = meta["validation"]
            rows.append({"target": target, "options": options, "calibration_images": 48, "images": val["images"],
                         "agreement": val["top1_agreement"], "mean_cosine": val["mean_cosine"], "top1_keras": val["top1_keras"],
                         "top1": val["top1_artifact"], "failures": val["failures"]})
    cpu = cpu_features()
    record = {"cpu": cpu, "rows": rows, "environment": report.environment(),
              "versions": versions("ai-edge-litert", "onnxruntime", "openvino", "nncf")}
    path = OUT / "int8_small.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    # One record per CPU (int8 kernels round differently on each): this CPU's replaces its last one.
    records = [r for r in old.get("records", [old] if "rows" in old else []) if r["cpu"] != cpu] + [record]
    fsio.write_text(path, json.dumps({"variant": VARIANT, "records": records}, indent=2) + "\n")
    render(records)


if __name__ == "__main__":
    main()
