#!/usr/bin/env bash
# Per-block int8 sensitivity of the trained Lite0 detector (benchmarks/models/efficientdet-lite0-scenes)
# on every unit: backbone blocks, the P6/P7 resampling, each BiFPN cell and both heads, ranked by the
# SNR of the raw output and judged by the mAP of the int8 artifact against the fp32 detector's own
# boxes; then the float-fallback budget (--min-agreement, that mAP) from that ranking. Calibration:
# the seeded detection set's 64 training scenes; evaluation: its 96 held-out scenes (as edgeeff.toml's
# detection check). About 20 min per target for the table on 2 cores, more for the budget.
# Results: benchmarks/results/sensitivity/efficientdet-lite0-TARGET{,-budget}.{json,png}.
#   benchmarks/detector_sensitivity.sh                              # onnx-int8, budget 0.92
#   TARGETS=openvino-int8 MIN_AGREEMENT=0.95 benchmarks/detector_sensitivity.sh
#   TARGETS=openvino-int8 NO_BUDGET=1 benchmarks/detector_sensitivity.sh   # the table only
set -euo pipefail
cd "$(dirname "$0")/.."
D=efficientdet-lite0
W=benchmarks/models/efficientdet-lite0-scenes
R=benchmarks/results/sensitivity
S=${SHARED:-../shared}/data/imagenet-sample/images
mkdir -p "$R"
[ -f .edgeeff-scenes/held-out/annotations.json ] ||
  edgeeff detection-set "$S" --out .edgeeff-scenes --train 64 --held-out 96 --seed 0
failed=()
for t in ${TARGETS:-onnx-int8}; do
  if [ -z "${BUDGET_ONLY:-}" ]; then
    edgeeff sensitivity --variant "$D" --weights "$W" --target "$t" --images .edgeeff-scenes/held-out/images \
      --calibration .edgeeff-scenes/train/images --json "$R/$D-$t.json" --plot "$R/$D-$t.png"
  fi
  record="$R/$D-$t-budget.json"
  if [ -z "${NO_BUDGET:-}" ]; then
    rm -f "$record"
    if ! edgeeff convert --variant "$D" --weights "$W" --target "$t" --images .edgeeff-scenes/held-out/images \
      --calibration .edgeeff-scenes/train/images --min-agreement "${MIN_AGREEMENT:-0.92}" --sensitivity "$R/$D-$t.json" \
      --out .bench-budget --json "$record"; then
      failed+=("$t")
    fi
  fi
  python benchmarks/detector_sensitivity_table.py "$t" > /dev/null
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "detector_sensitivity.sh: the budget search failed for ${failed[*]}; no record written for them" >&2
  exit 1
fi
