"""EfficientDet D0-D7 and Lite0-4 as built here, against the published sizes: parameters (trainable,
as the paper counts them, and all) and multiply-adds, counted from each built Keras model by
``edgeeff models`` (the real CLI, in a child process).

    python benchmarks/detectors.py             # builds the 13 detectors (about 2 minutes on 2 cores), writes results/detectors.*
    python benchmarks/detectors.py --render-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def render(data: dict) -> str:
    from edgeeff import report

    columns = [("detector", "detector"), ("backbone", "backbone"), ("resolution", "input px"), ("fpn_width", "BiFPN width"),
               ("fpn_depth", "BiFPN layers"), ("head_depth", "head layers"), ("trainable_params", "trainable params"),
               ("published_params", "published params"), ("params_vs_published", "vs published"), ("params", "all params"),
               ("gmacs", "GMACs"), ("published_gflops", "published GFLOPs"), ("published_source", "published in")]
    return "\n".join([
        "# EfficientDet as built here, against the published sizes",
        "",
        f"Measured {data['date']} with `edgeeff models` ({data['seconds']:.0f} s to build all {len(data['rows'])} on {data['cpu']}); "
        "90 classes, parameters counted from the built Keras model (the paper counts trainable ones), multiply-adds of the "
        "convolutions and dense layers. Lite rows are published rounded to 0.1 M; their exact counts equal the reference "
        "implementation's own (google/automl).",
        "",
        report.to_markdown(data["rows"], columns).rstrip(),
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-only", action="store_true", help="Rewrite the .md from the recorded .json; run nothing.")
    args = parser.parse_args()
    record = RESULTS / "detectors.json"
    if not args.render_only:
        from edgeeff.kit.probe import cpu_model
        from edgeeff.model.detectors import DETECTORS

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "m.json"
            names = [a for name in DETECTORS for a in ("--variant", name)]
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "edgeeff.cli", "models", *names, "--json", str(out)],
                                  capture_output=True, text=True, env={**__import__("os").environ, "EDGEEFF_CACHE": tmp})
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"edgeeff models failed: {done.stderr[-2000:]}")
            rows = [r for r in json.loads(out.read_text())["rows"] if r["task"] == "detect"]
        data = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "seconds": seconds, "rows": rows}
        record.write_text(json.dumps(data, indent=2) + "\n")
    data = json.loads(record.read_text())
    (RESULTS / "detectors.md").write_text(render(data))
    print(f"wrote {RESULTS / 'detectors.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
