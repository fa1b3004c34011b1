#!/usr/bin/env bash
# Several machines: run on every node with the same CONFIG and flags:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 MASTER_PORT=29500 launch/multi_node.sh CONFIG.yaml [flags...]
# Env: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (required), NPROC_PER_NODE (default: the
# number of GPUs), MAX_RESTARTS (default 3). --output must be on a filesystem every node
# sees, for restarts to find the checkpoint. Launching a job again into its output directory
# needs --resume (continue) or --overwrite (start over).
set -euo pipefail
if [[ $# -lt 1 || ! -f "$1" ]]; then
  echo "usage: NNODES=.. NODE_RANK=.. MASTER_ADDR=.. MASTER_PORT=.. $0 CONFIG.yaml [flags...]  (config file: '${1:-}' not found)" >&2
  exit 2
fi
for var in NNODES NODE_RANK MASTER_ADDR MASTER_PORT; do
  if [[ -z "${!var:-}" ]]; then echo "$0: environment variable $var is not set" >&2; exit 2; fi
done
config="$1"; shift
nproc="${NPROC_PER_NODE:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
if [[ "$nproc" -lt 1 ]]; then
  echo "$0: no GPU found; set NPROC_PER_NODE" >&2
  exit 2
fi
exec torchrun --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$nproc" \
  --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" --max-restarts "${MAX_RESTARTS:-3}" \
  -m gnn_tt train --config "$config" "$@"
