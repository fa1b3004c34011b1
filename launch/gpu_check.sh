#!/usr/bin/env bash
# GPU check of the Triton TT kernels, one command, about 5 minutes on one H100:
#   launch/gpu_check.sh
# 1. the device line, 2. the kernel tests compiled for CUDA (GNN_TT_TRITON_CUDA=1, no
# interpreter) against the torch path and the dense table, 3. `gnn-tt bench kernels`: the
# throughput table, printed and written to $OUT/kernels.json (results/ when OUT is unset).
# Needs a Python with a CUDA build of torch, triton and the project's dependencies (the
# repository root is put on the path by `python -m`); PYTHON picks the interpreter (default:
# python on PATH). Sections are independent blocks: append new ones
# (e.g. a training step comparison) at the end, each with its own time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
out_dir="${OUT:-results}"
mkdir -p "$out_dir"
section() { printf '\n=== %s (%s) ===\n' "$1" "$(date -u +%H:%M:%S)"; }

section "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda,
"triton", triton.__version__, "gpu", torch.cuda.get_device_name(0))'

section "kernel correctness: compiled Triton vs torch path and dense table"
GNN_TT_TRITON_CUDA=1 TRITON_INTERPRET=0 timeout 120 \
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_tt_lookup_triton.py

section "kernel throughput: gnn-tt bench kernels"
TRITON_INTERPRET=0 timeout 170 \
  "$PYTHON" -m gnn_tt bench kernels --output "$out_dir/kernels.json"
