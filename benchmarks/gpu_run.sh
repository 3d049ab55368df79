#!/usr/bin/env bash
# On a CUDA machine without TensorFlow or network (the device tool's GPU machine): put onnxruntime-gpu
# and edgeeff (no dependencies) on the path, point the loader at the CUDA libraries that PyTorch's
# NVIDIA wheels installed, then run benchmarks/gpu_onnx.py on the pack from benchmarks/gpu_pack.py.
# Usage: benchmarks/gpu_run.sh WORK OUT  (WORK holds ort.tar.xz, an unpacked onnxruntime-gpu wheel, and gpu-pack/)
set -euo pipefail
work=$1; out=$2; here=$(cd "$(dirname "$0")/.." && pwd)
site=/tmp/edgeeff-site
rm -rf "$site" && mkdir -p "$site/edgeeff"
# onnxruntime-gpu travels as an unpacked wheel in ort.tar.xz; without it the machine's own onnxruntime runs (CPU rows only)
[ -f "$work/ort.tar.xz" ] && python3 -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$work/ort.tar.xz" "$site"
cp -r "$here/edgeeff/." "$site/edgeeff/"
cp -r "$here/targets" "$site/edgeeff/targets"
cp -r "$here/calibration" "$site/edgeeff/calibration"
export PYTHONPATH=$site
mkdir -p "$out"
# First without LD_LIBRARY_PATH: does onnxruntime.preload_dlls() (called by the runner) find pip's CUDA libraries alone?
python3 - "$work/gpu-pack/onnx-fp32/model.onnx" <<'PY' 2>&1 | tee "$out/preload_only.txt"  # the probe prints its own failure; anything else stops the run
import sys
from edgeeff import devicekit
try:
    print("preload_dlls alone:", devicekit.load_runner("onnx", sys.argv[1], accelerator="gpu").describe()["nodes_by_provider"])
except devicekit.RunnerError as exc:
    print("preload_dlls alone:", exc)
PY
purelib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export LD_LIBRARY_PATH=$(find "$purelib/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import onnxruntime as o, numpy; print('onnxruntime', o.__version__, o.__file__, o.get_available_providers(), 'numpy', numpy.__version__)"
PYTHONUNBUFFERED=1 python3 "$here/benchmarks/gpu_onnx.py" "$work/gpu-pack" "$out" "${@:3}" 2>&1 | tee "$out/gpu_onnx.log"
