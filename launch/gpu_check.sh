#!/usr/bin/env bash
# GPU check, one command, at most about 12 minutes on one H100:
#   OUT=results launch/gpu_check.sh
# 1. the device line;
# 2. the CUDA tests: Triton kernels compiled for the GPU (GNN_TT_TRITON_CUDA=1, no interpreter)
#    against the torch path and the dense table, the sampler on CUDA, and short training runs
#    on CUDA (tt with sage and gat, full table) against the same recipe on the CPU;
# 3. `gnn-tt bench kernels`: the kernel throughput table -> $OUT/kernels.json;
# 4. `gnn-tt bench train` on the GPU at papers100M width (D = 128): a batch of TT on the GPU vs
#    a batch fed from the host-resident full table -> $OUT/train_gpu.json;
# 5. `gnn-tt bench train` at products' width (D = 100, SAGE 3x256, fanouts 15,10,5, batch 1000):
#    a batch of TT vs the full table on the device and on the host, with the bytes per step
#    (sharded needs >= 2 GPUs: on one its row says so). Target (issue 13): a TT batch <= 1.2x
#    the device-resident table's -> $OUT/train_gpu_placements.json.
# Each section has its own time limit and a failed section does not stop the next ones; the
# exit status is that of the first failure. Needs a Python with a CUDA build of torch, triton
# and the project's dependencies (the repository root is on the path through `python -m`);
# PYTHON picks the interpreter (default: python on PATH).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
out_dir="${OUT:-results}"
mkdir -p "$out_dir"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
status=0
section() { printf '\n=== %s (%s) ===\n' "$1" "$(date -u +%H:%M:%S)"; }
check() {  # check NAME SECONDS CMD...: run CMD under a time limit, remember the first failure
  local name=$1 limit=$2 rc
  shift 2
  timeout "$limit" "$@"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "gpu_check: $name FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ", over ${limit} s"))"
    [ "$status" -ne 0 ] || status=$rc
  fi
}

section "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv,noheader
"$PYTHON" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda,
"triton", triton.__version__, "gpu", torch.cuda.get_device_name(0))'

section "CUDA tests: Triton kernels, sampler, training"
GNN_TT_TRITON_CUDA=1 check tests 150 "$PYTHON" -m pytest -q -rs -p no:cacheprovider \
  tests/test_tt_lookup_triton.py tests/test_sampler.py tests/test_train.py -k "triton or cuda"

section "kernel throughput: gnn-tt bench kernels"
check "bench kernels" 200 "$PYTHON" -m gnn_tt bench kernels --output "$out_dir/kernels.json"

section "training batch on the GPU, TT vs host full table, D = 128: gnn-tt bench train"
check "bench train" 150 "$PYTHON" -m gnn_tt bench train --device cuda --tt-q-shapes 8,4,4 \
  --variants tt,host --partition random --max-batches 20 --workdir /tmp/gnn_tt_bench_train \
  --output "$out_dir/train_gpu.json"

section "training batch on the GPU, TT vs the full table on the device and the host, D = 100"
check "bench train placements" 240 "$PYTHON" -m gnn_tt bench train --device cuda \
  --variants tt,device,host,sharded --partition random --max-batches 20 \
  --workdir /tmp/gnn_tt_bench_train_d100 --output "$out_dir/train_gpu_placements.json"
exit "$status"
