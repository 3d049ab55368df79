"""The trained Lite0 detector's per-block sensitivity and budget search as one Markdown record, from
the reports `benchmarks/detector_sensitivity.sh` writes (`edgeeff sensitivity --json`, `edgeeff
convert --min-agreement --json`).

    python benchmarks/detector_sensitivity_table.py [TARGET]   # default onnx-int8
    # -> benchmarks/results/sensitivity/efficientdet-lite0-TARGET.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeeff import fsio, report

RESULTS = Path(__file__).resolve().parent / "results" / "sensitivity"
DETECTOR = "efficientdet-lite0"


def main(target: str = "onnx-int8") -> str:
    sens = json.loads((RESULTS / f"{DETECTOR}-{target}.json").read_text())
    base = sens["plain_int8"]
    rows = [{"block": r["block"], "map_vs_reference": r["agreement"], "delta_map": f"{r['delta_agreement'] * 100:+.2f}",
             "snr": f"{r['snr_db']:.2f}", "gain": f"{r['delta_snr_db']:+.3f}", "rank": sens["ranking"].index(r["block"]) + 1}
            for r in sens["rows"]]
    parts = [f"{DETECTOR} trained on the composed scenes (`benchmarks/models/efficientdet-lite0-scenes`), {target}, keep-float "
             f"sensitivity on {sens['environment']['processor']}: each block alone in float, judged on the "
             f"{base['images']} held-out scenes against the fp32 detector's {base['reference_boxes']} confident boxes "
             f"(mAP of the artifact against them) and by the SNR of the raw output, which ranks. Plain int8: mAP vs fp32 boxes "
             f"{report.percent(base['agreement'])}, SNR {base['snr_db']:.2f} dB. Calibration: 64 training scenes.\n",
             report.to_markdown(rows, [("block", "block"), ("map_vs_reference", "mAP vs fp32 boxes"),
                                       ("delta_map", "change (points)"), ("snr", "SNR dB"), ("gain", "SNR gained (dB)"),
                                       ("rank", "rank")])]
    budget_path = RESULTS / f"{DETECTOR}-{target}-budget.json"
    if budget_path.is_file():
        meta = json.loads(budget_path.read_text())["metadata"]
        b = meta["budget"]
        steps = [{"step": st["step"], "float": ", ".join(st["float_blocks"]) or "-", "map_vs_reference": st["agreement"],
                  "meets": st["meets"], "median_ms": st["median_ms"],
                  "side_by_side": (f"{st['side_by_side_ms'][0]:.2f} vs {st['side_by_side_ms'][1]:.2f}: "
                                   f"{'faster, kept' if st.get('faster') else 'not faster'}" if st.get("side_by_side_ms") else "-")}
                 for st in b["steps"]]
        parts.append(f"\nBudget search, `--min-agreement {b['min_agreement']:g}` (mAP against the fp32 detector's boxes), from the "
                     f"ranking above; each step a real conversion, its median ms measured once in a fresh process (noisy on a shared host: "
                     "a change that must also run faster is timed side by side with the set before it):\n")
        parts.append(report.to_markdown(steps, [("step", "step"), ("float", "blocks in float"), ("map_vs_reference", "mAP vs fp32 boxes"),
                                                ("meets", "meets"), ("median_ms", "median ms"),
                                                ("side_by_side", "ms side by side (this vs before)")]))
        parts.append(f"\nKept in float: {', '.join(b['float_blocks']) or 'nothing'} ({report.percent(b['float_macs_fraction'])} of "
                     f"the multiply-adds). Side by side (3 rounds): fp32 {b['fp32_median_ms']:.2f} ms, plain int8 "
                     f"{b['plain_int8_median_ms']:.2f} ms, the result {b['median_ms']:.2f} ms: {b['speedup_budgeted']:.2f}x over fp32 "
                     f"where plain int8 gives {b['speedup_plain_int8']:.2f}x.\n")
    text = "\n".join(parts)
    fsio.write_text(RESULTS / f"{DETECTOR}-{target}.md", text)
    return text


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
