#!/usr/bin/env bash
# Per-block int8 sensitivity on the three backends, then the budget search (--max-drop, and
# --min-agreement when MIN_AGREEMENT is set) on each, for one variant with its real weights, on the
# shared sample: a seeded 20/80 split (103 calibration images, 397 evaluation images; 0.3 points
# needs >= 334). The table uses the first 150 evaluation images; the budget all 397.
# Results: benchmarks/results/sensitivity/VARIANT-TARGET[-budgetSUFFIX].{json,png}.
#   benchmarks/sensitivity.sh                                   # Lite0, three backends, --max-drop 0.3
#   VARIANT=lite1 TARGETS=tflite-int8 BUDGET_TARGETS=" " benchmarks/sensitivity.sh
#   BUDGET_TARGETS=onnx-int8 TARGETS=" " MAX_DROP=0.5 MIN_AGREEMENT=0.985 SUFFIX=985 benchmarks/sensitivity.sh
# The budget search ranks by RANKING (default this variant's table for the target); the table can
# be measured under quantizer settings (SENS_OPTS, e.g. the ones the budget's settings pass adopts):
#   VARIANT=lite1 RANKING=lite0 TARGETS=" " BUDGET_TARGETS=openvino-int8 benchmarks/sensitivity.sh
#   VARIANT=lite1 TARGETS=openvino-int8 SENS_OPTS="--bias-correction --preset mixed" SENS_SUFFIX=-bc-mixed \
#     BUDGET_TARGETS=openvino-int8 SUFFIX=-own benchmarks/sensitivity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
V=${VARIANT:-lite0}
R=benchmarks/results/sensitivity
S=${SHARED:-../shared}/data/imagenet-sample/images
mkdir -p "$R" .bench-lists
edgeeff split "$S" --fraction 0.2 --seed 0 --first .bench-lists/cal.txt --second .bench-lists/eval.txt
head -150 .bench-lists/eval.txt > .bench-lists/eval150.txt
for t in ${TARGETS:-onnx-int8 openvino-int8 tflite-int8}; do
  edgeeff sensitivity --variant "$V" --target "$t" --images .bench-lists/eval150.txt --calibration .bench-lists/cal.txt \
    ${SENS_OPTS:-} --json "$R/$V-$t${SENS_SUFFIX:-}.json" --plot "$R/$V-$t${SENS_SUFFIX:-}.png"
done
# A search that fails (the budget cannot be met, or an error) must not leave an older record in its
# place: the record is removed first, the other targets still run, and the script exits 1 naming them.
failed=()
for t in ${BUDGET_TARGETS:-onnx-int8 openvino-int8 tflite-int8}; do
  record="$R/$V-$t-budget${SUFFIX:-}.json"
  rm -f "$record"
  if ! edgeeff convert --variant "$V" --target "$t" --images .bench-lists/eval.txt --calibration .bench-lists/cal.txt \
    --max-drop "${MAX_DROP:-0.3}" ${MIN_AGREEMENT:+--min-agreement "$MIN_AGREEMENT"} --sensitivity "$R/${RANKING:-$V}-$t${SENS_SUFFIX:-}.json" \
    --out .bench-budget --json "$record"; then
    failed+=("$t")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "sensitivity.sh: the budget search failed for $V ${failed[*]}; no record written for them (see the edgeeff lines above)" >&2
  exit 1
fi
