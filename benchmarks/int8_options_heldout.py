"""Lite0 int8 options tried against the issue's bar (98 % agreement with fp32 on photos outside calibration).

Each row is ``edgeeff convert --variant lite0 --target T --calibration <shared sample> [options]``
(this CPU's recipe, the user's options on top), scored against Keras fp32 on every photo of the
sample that calibration did not use (300 of 500). Prints one JSON row per conversion as it goes and
writes benchmarks/results/int8_options_heldout.{json,md}; ``--rows FILE`` renders rows printed earlier.

    python benchmarks/int8_options_heldout.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_recipes import RESULTS, SHARED, held_out  # noqa: E402

CONFIGS = (("tflite-int8", {"io_dtype": "uint8"}), ("onnx-int8", {"calibration_method": "percentile"}),
           ("onnx-int8", {"quant_types": "s8s8"}), ("openvino-int8", {"fast_bias_correction": False}))


def render(rows: list[dict], cpu: dict) -> None:
    from edgeeff import fsio, report

    fsio.write_text(RESULTS / "int8_options_heldout.json", json.dumps({**cpu, "rows": rows}, indent=2) + "\n")
    table = [{**r, "options": ", ".join(f"{k}={v}" for k, v in r["options"].items())} for r in rows]
    md = [f"Lite0 (lite0-pypi) int8 with options on top of the recipe, on {cpu['cpu']} ({cpu['cpu_profile']}: "
          f"{', '.join(cpu['cpu_features'])}): calibrated on 200 photos of the shared sample (the default), scored against Keras "
          f"fp32 on the {rows[0]['images']} photos calibration did not use (`benchmarks/int8_options_heldout.py`). The recipes "
          f"themselves on the same photos: `validation_spare.md` (healthy rows).\n",
          report.to_markdown(table, [("target", "target"), ("options", "options"), ("images", "images"), ("agreement", "agreement"),
                                     ("drop_points", "top-1 drop (points)"), ("drop_ci95_points", "paired 95% CI"), ("ties", "tied top-1"),
                                     ("cosine", "cosine")])]
    fsio.write_text(RESULTS / "int8_options_heldout.md", "\n".join(md) + "\n")


def main() -> int:
    from edgeeff.convert import convert
    from edgeeff.data.images import list_samples
    from edgeeff.devices.cpu import int8_features, local_profile
    from edgeeff.kit import probe as kit_probe

    cpu = {"cpu": kit_probe.cpu_model(), "cpu_features": int8_features(kit_probe.cpu_features()[0]), "cpu_profile": local_profile().name}
    if sys.argv[1:2] == ["--rows"]:
        rows = [json.loads(line) for line in Path(sys.argv[2]).read_text().splitlines() if line.startswith("{")]
        render(rows, cpu)
        return 0
    import tempfile

    folder = SHARED / "images"
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeeff-options-") as tmp:
        for number, (target, options) in enumerate(CONFIGS):
            meta = convert("lite0", target, out=Path(tmp) / str(number), calibration=folder, options=options, require_valid=False)
            used = {f["name"] for f in meta["calibration"]["files"]}
            score = held_out(meta["path"], [s for s in list_samples(folder) if s.path.name not in used])
            row = {"target": target, "options": meta["options"], "calibration_images": meta["calibration"]["count"], **score}
            print(json.dumps(row), flush=True)
            rows.append(row)
    render(rows, cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
