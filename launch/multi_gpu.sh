#!/usr/bin/env bash
# N GPUs of one machine: launch/multi_gpu.sh CONFIG.yaml [gnn-tt train flags...]
# Env: NPROC (default: the number of GPUs nvidia-smi lists), MAX_RESTARTS (default 3).
# A worker that dies is restarted by torchrun with the same command line and resumes from
# OUTPUT/checkpoint.pt (the output directory is derived from the config, so it is the same).
# Launching a job again into its output directory needs --resume (continue) or --overwrite.
set -euo pipefail
if [[ $# -lt 1 || ! -f "$1" ]]; then
  echo "usage: [NPROC=N] $0 CONFIG.yaml [gnn-tt train flags...]  (config file: '${1:-}' not found)" >&2
  exit 2
fi
config="$1"; shift
nproc="${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
if [[ "$nproc" -lt 1 ]]; then
  echo "$0: no GPU found; set NPROC (gloo on CPU) or use launch/single.sh" >&2
  exit 2
fi
exec torchrun --standalone --nproc-per-node "$nproc" --max-restarts "${MAX_RESTARTS:-3}" \
  -m gnn_tt train --config "$config" "$@"
