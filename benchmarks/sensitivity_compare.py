"""Lite0's per-block int8 sensitivity side by side on the three backends, from the reports that
`benchmarks/sensitivity.sh` writes (`edgeeff sensitivity --json`): SNR gained by keeping each
block in float and its rank per backend, plus each backend's plain int8 figures.

    python benchmarks/sensitivity_compare.py   # -> benchmarks/results/sensitivity/lite0-compare.md
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeeff import fsio, report

RESULTS = Path(__file__).resolve().parent / "results" / "sensitivity"
TARGETS = ("tflite-int8", "onnx-int8", "openvino-int8")


def main() -> None:
    reports = {t: json.loads((RESULTS / f"lite0-{t}.json").read_text()) for t in TARGETS if (RESULTS / f"lite0-{t}.json").is_file()}
    blocks = [r["block"] for r in next(iter(reports.values()))["rows"]]
    rows = []
    for block in blocks:
        row = {"block": block}
        for target, rep in reports.items():
            gain = next(r["delta_snr_db"] for r in rep["rows"] if r["block"] == block)
            row[target] = f"{gain:+.2f} (#{rep['ranking'].index(block) + 1})" if block in rep["ranking"] else f"{gain:+.2f}"
        rows.append(row)
    columns = [("block", "block")] + [(t, f"{t}: dB gained (rank)") for t in reports]
    plain = [{"target": t, "images": rep["plain_int8"]["images"], "agreement": f"{rep['plain_int8']['agreement']:.1%}",
              "snr": f"{rep['plain_int8']['snr_db']:.1f}", "top3": ", ".join(rep["ranking"][:3])} for t, rep in reports.items()]
    text = ("Lite0 (lite0-pypi), keep-float sensitivity: SNR of the logits gained by keeping one block in float, "
            "its rank in that backend's ranking (`#`); 150 evaluation images, 103 calibration images.\n\n"
            + report.to_markdown(plain, [("target", "target"), ("images", "images"), ("agreement", "plain int8 agreement"),
                                         ("snr", "plain int8 SNR dB"), ("top3", "top three blocks")])
            + "\n" + report.to_markdown(rows, columns))
    fsio.write_text(RESULTS / "lite0-compare.md", text)
    print(text)


if __name__ == "__main__":
    main()
