#!/usr/bin/env bash
# One process (CPU or one GPU): launch/single.sh CONFIG.yaml [gnn-tt train flags...]
# Flags after the config override it, e.g. launch/single.sh launch/configs/products_sage.yaml --epochs 2
# An output directory that already holds a run is refused: add --resume to continue it or
# --overwrite to replace it.
set -euo pipefail
if [[ $# -lt 1 || ! -f "$1" ]]; then
  echo "usage: $0 CONFIG.yaml [gnn-tt train flags...]  (config file: '${1:-}' not found)" >&2
  exit 2
fi
config="$1"; shift
exec python -m gnn_tt train --config "$config" "$@"
