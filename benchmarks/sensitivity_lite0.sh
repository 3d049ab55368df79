#!/usr/bin/env bash
# Lite0 (real weights) per-block int8 sensitivity on the three backends, then the budget search
# (--max-drop, and --min-agreement when MIN_AGREEMENT is set) on each, on the shared sample: a
# seeded 20/80 split (103 calibration images, 397 evaluation images; 0.3 points needs >= 334).
# Results: benchmarks/results/sensitivity/ (budget files get SUFFIX, e.g. SUFFIX=985).
#   TARGETS=tflite-int8 BUDGET_TARGETS="tflite-int8 onnx-int8" MAX_DROP=0.5 MIN_AGREEMENT=0.985 SUFFIX=985 benchmarks/sensitivity_lite0.sh
set -euo pipefail
cd "$(dirname "$0")/.."
R=benchmarks/results/sensitivity
S=${SHARED:-../shared}/data/imagenet-sample/images
mkdir -p "$R" .bench-lists
edgeeff split "$S" --fraction 0.2 --seed 0 --first .bench-lists/cal.txt --second .bench-lists/eval.txt
head -150 .bench-lists/eval.txt > .bench-lists/eval150.txt
for t in ${TARGETS:-onnx-int8 openvino-int8 tflite-int8}; do
  edgeeff sensitivity --variant lite0 --target "$t" --images .bench-lists/eval150.txt --calibration .bench-lists/cal.txt \
    --json "$R/lite0-$t.json" --plot "$R/lite0-$t.png"
done
for t in ${BUDGET_TARGETS:-onnx-int8 openvino-int8 tflite-int8}; do
  edgeeff convert --variant lite0 --target "$t" --images .bench-lists/eval.txt --calibration .bench-lists/cal.txt \
    --max-drop "${MAX_DROP:-0.3}" ${MIN_AGREEMENT:+--min-agreement "$MIN_AGREEMENT"} --sensitivity "$R/lite0-$t.json" \
    --out .bench-budget --json "$R/lite0-$t-budget${SUFFIX:-}.json" || true
done
