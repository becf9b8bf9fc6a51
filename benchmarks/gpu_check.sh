#!/usr/bin/env bash
# One unattended CUDA check (about 5 minutes) for a machine with an NVIDIA GPU:
#   1. installs the cuda extra (onnxruntime-gpu) -- from ./.wheels when the machine has no
#      network (fill it beforehand with: pip download onnxruntime-gpu -d .wheels --no-deps);
#   2. runs the test suite with KGRAPH_DEVICE=cuda;
#   3. runs the MLP benchmarks on CUDA and CPU;
#   4. prints a summary. Output also goes to ${OUT:-/tmp}/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG="${OUT:-/tmp}/gpu_check.log"
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1
summary=()
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"

if [ -d .wheels ]; then
  pip install --quiet --no-index --find-links .wheels onnxruntime-gpu
else
  pip install --quiet "onnxruntime-gpu>=1.18"
fi
pip install --quiet --no-deps -e . 2>/dev/null || pip install --quiet -e .
python - <<'PY'
import onnxruntime as ort, kgraph
print("providers:", ort.get_available_providers())
print("kgraph device:", kgraph.config.set_device("cuda"))
PY
[ $? -eq 0 ] && summary+=("cuda device: ok") || summary+=("cuda device: FAILED")

timeout 180 env KGRAPH_DEVICE=cuda python -m pytest -q -x tests --ignore=tests/test_distributed.py \
  -p no:cacheprovider 2>&1 | tail -15
summary+=("tests on cuda: exit ${PIPESTATUS[0]}")

for dev in cuda cpu; do
  timeout 60 env KGRAPH_DEVICE=$dev python benchmarks/train_mlp.py --framework kgraph --batch 128 2>&1 | tail -3
  summary+=("train_mlp b128 on $dev: exit ${PIPESTATUS[0]}")
done
echo "== summary"
printf '%s\n' "${summary[@]}"
