"""On-disk cache of row assignments: keyed by the graph and every parameter, written
atomically, verified on load (never trusted: a bad file is reported and recomputed)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from gnn_tt.data.graph import CSRGraph
from gnn_tt.common.io import atomic_torch_save, tensor_digest

# Bump when the algorithm changes what it returns for the same inputs: old files miss.
CACHE_VERSION = 1


def cache_key(graph: CSRGraph, params: dict[str, Any]) -> str:
    """Hash of the graph's CSR arrays and the parameters (canonical JSON)."""
    extra = json.dumps({"version": CACHE_VERSION, **params}, sort_keys=True)
    return tensor_digest(graph.rowptr, graph.col, extra=extra)


def cache_path(cache_dir: str | Path, method: str, key: str) -> Path:
    return Path(cache_dir) / f"rows-{method}-{key}.pt"


def save_rows(path: Path, key: str, params: dict[str, Any], row_of_node: torch.Tensor,
              info: dict[str, float | int]) -> None:
    """Write the assignment with its key, parameters, a digest of the rows and ``info``
    (how it was computed: seconds, nodes moved)."""
    atomic_torch_save({"key": key, "params": params, "row_of_node": row_of_node,
                       "row_digest": tensor_digest(row_of_node), "info": info}, path)


def _problem(obj: Any, key: str, params: dict[str, Any], num_rows: int) -> str | None:
    """Why a loaded object is not a valid cache entry for (key, params), or None."""
    if not isinstance(obj, dict) or not {"key", "params", "row_of_node", "row_digest",
                                         "info"} <= obj.keys():
        return "not a row-assignment cache file"
    if obj["key"] != key or obj["params"] != params:
        return f"it was written for other inputs (key {obj['key']!r}, params {obj['params']})"
    rows = obj["row_of_node"]
    if not isinstance(rows, torch.Tensor) or rows.dtype != torch.long or rows.dim() != 1 \
            or rows.numel() != params["num_nodes"]:
        return "row_of_node has the wrong type or shape"
    if tensor_digest(rows) != obj["row_digest"]:
        return "row_of_node does not match its digest"
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= num_rows
                         or int(torch.bincount(rows).max()) > 1):
        return f"row_of_node is not injective into [0, {num_rows})"
    return None


def load_rows(path: Path, key: str, params: dict[str, Any], num_rows: int
              ) -> tuple[torch.Tensor, dict[str, float | int]] | None:
    """``(row_of_node, info)`` from a verified cache file; ``None`` (with a warning when the
    file exists but is unreadable or does not match) otherwise."""
    if not path.exists():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file raises many different errors
        warnings.warn(f"partition cache {path} is unreadable ({type(err).__name__}: {err}); "
                      f"recomputing", RuntimeWarning, stacklevel=3)
        return None
    problem = _problem(obj, key, params, num_rows)
    if problem is not None:
        warnings.warn(f"partition cache {path} is invalid: {problem}; recomputing",
                      RuntimeWarning, stacklevel=3)
        return None
    return obj["row_of_node"], dict(obj["info"])
