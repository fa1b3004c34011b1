"""``assign_rows``: the embedding row of every node, under one of the layout methods."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from gnn_tt.data.graph import CSRGraph
from partition.cache import cache_key, cache_path, load_rows, save_rows
from partition.hierarchical import hierarchical_rows
from partition.metis import csr_numpy, to_csr
from partition.multilevel import multilevel_rows
from partition.orderings import metis_flat_rows, original_rows, random_rows, rcm_rows
from partition.stats import assignment_stats

# The layouts aligned to the TT digits: p1 = tt_p_shapes[0] top-level parts, each cut further
# along the digits. hierarchical: METIS on every block; multilevel: every block coarsened
# first, METIS on the coarse graph; auto: one of the two by the graph's size.
HIERARCHY_METHODS = ("auto", "hierarchical", "multilevel")
# The methods on the sweeps' "parts" axis (gnn_tt.experiments.parts), which cut the graph
# into a chosen number of parts: metis-flat into num_parts, hierarchical into p1.
PARTITIONING_METHODS = ("metis-flat", "hierarchical")
# Every method, alphabetically: the partitioning ones and those that only order the nodes.
METHODS = tuple(sorted({*PARTITIONING_METHODS, *HIERARCHY_METHODS, "original", "random",
                        "rcm"}))
# "auto" takes multilevel for graphs with more stored (directed) edges than this, where one
# METIS call on the whole graph would need > 1.4 GB (partition.memory.METIS_BYTES_PER_EDGE),
# and hierarchical below.
AUTO_MULTILEVEL_EDGES = 1 << 24


def resolve_method(method: str, num_edges: int) -> str:
    """The method that runs for ``method`` on a graph of ``num_edges`` stored edges:
    ``"auto"`` becomes ``"multilevel"`` above :data:`AUTO_MULTILEVEL_EDGES`, else
    ``"hierarchical"``; every other method is itself."""
    if method != "auto":
        return method
    return "multilevel" if num_edges > AUTO_MULTILEVEL_EDGES else "hierarchical"


@dataclass
class RowAssignment:
    r"""An injective map from nodes to rows of a TT embedding with row factors
    ``tt_p_shapes``, and how well it keeps the graph together.

    Args:
        row_of_node (torch.Tensor): int64 row of every node, distinct, in
            ``[0, prod(tt_p_shapes))``.
        method (str): the method that made it, one of :data:`METHODS` (never ``"auto"``:
            the method ``"auto"`` chose).
        tt_p_shapes (tuple[int, ...]): row factors :math:`(p_1, \dots, p_d)`.
        num_parts (int, optional): the k of ``metis-flat`` (``None`` for other methods).
        seed (int): the seed it was made with.
        stats (dict): ``seconds`` (time to compute the assignment), ``cache_hit``,
            ``moved`` (nodes the capacity repair moved, hierarchical and multilevel only)
            and the quality figures of :func:`partition.stats.assignment_stats`.

    Shapes:
        - **row_of_node:** :math:`(N,)`
    """

    row_of_node: torch.Tensor
    method: str
    tt_p_shapes: tuple[int, ...]
    num_parts: int | None = None
    seed: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.row_of_node.numel())

    @property
    def num_rows(self) -> int:
        """Rows of the TT grid, ``prod(tt_p_shapes)`` (>= ``num_nodes``)."""
        return math.prod(self.tt_p_shapes)

    def __repr__(self) -> str:
        k = f", num_parts={self.num_parts}" if self.num_parts is not None else ""
        return (f"{self.__class__.__name__}(method={self.method}, num_nodes={self.num_nodes}, "
                f"tt_p_shapes={self.tt_p_shapes}{k}, seed={self.seed})")


def _check_args(num_nodes: int, tt_p_shapes: Sequence[int], method: str,
                num_parts: int | None) -> tuple[tuple[int, ...], int | None]:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    p = tuple(int(x) for x in tt_p_shapes)
    if not p or min(p) < 1:
        raise ValueError(f"tt_p_shapes must be a non-empty sequence of positive ints, got "
                         f"{tuple(tt_p_shapes)}")
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
    if math.prod(p) < num_nodes:
        raise ValueError(f"tt_p_shapes={p} gives prod = {math.prod(p)} rows, fewer than "
                         f"num_nodes = {num_nodes}")
    if method != "metis-flat":
        return p, None  # num_parts only parameterizes metis-flat
    if num_parts is None:
        raise ValueError("method='metis-flat' needs num_parts (the k of the k-way METIS; "
                         "0 = original order)")
    if not 0 <= num_parts <= num_nodes:
        raise ValueError(f"num_parts must lie in [0, num_nodes = {num_nodes}], got {num_parts}")
    return p, int(num_parts)


def _labels_numpy(labels: torch.Tensor | np.ndarray, num_nodes: int) -> np.ndarray:
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    labels = labels.reshape(-1)  # OGB stores y as [N, 1]
    if labels.size != num_nodes or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must hold one integer label per node (negative = "
                         f"unlabelled): expected {num_nodes}, got {labels.dtype} "
                         f"{list(labels.shape)}")
    return labels.astype(np.int64, copy=False)


def assign_rows(edge_index: torch.Tensor | CSRGraph, num_nodes: int,
                tt_p_shapes: Sequence[int], method: str = "auto",
                num_parts: int | None = None, seed: int = 0,
                cache_dir: str | Path | None = None,
                labels: torch.Tensor | np.ndarray | None = None,
                progress: bool = False) -> RowAssignment:
    r"""Assign every node an embedding row so that nodes the graph puts together share the
    slices of the leading TT cores (see ``docs/design.md``, section 2).

    Methods: ``hierarchical`` (recursive METIS aligned to the digits, capacity-repaired),
    ``multilevel`` (the same digits, every block coarsened by label-propagation clustering
    before METIS and refined on the way back: peak memory a small multiple of the CSR),
    ``auto`` (``multilevel`` above :data:`AUTO_MULTILEVEL_EDGES` stored edges, else
    ``hierarchical``), ``metis-flat`` (one ``num_parts``-way METIS, nodes sorted by part;
    ``0`` = original order), ``original`` (dataset order), ``random`` (seeded permutation),
    ``rcm`` (reverse Cuthill-McKee). The graph is symmetrized; self-loops, duplicate edges, isolated nodes and
    disconnected components are fine. Deterministic for a given seed.

    Args:
        edge_index (torch.Tensor or CSRGraph): node ids, int ``[2, E]``, or a built graph.
        num_nodes (int): number of nodes ``N``.
        tt_p_shapes (Sequence[int]): row factors with ``prod >= N``, e.g. ``(125, 140, 140)``.
        method (str): one of :data:`METHODS` (default: ``"auto"``).
        num_parts (int, optional): k of ``metis-flat``, in ``[0, N]``; ignored by the other
            methods (default: ``None``).
        seed (int): seed of METIS / the random permutation (default: ``0``).
        cache_dir (str or Path, optional): read and write the assignment there, keyed by a
            hash of the graph and every parameter (default: ``None``, no cache).
        labels (torch.Tensor or np.ndarray, optional): integer label per node (negative =
            unlabelled), for the purity statistics only (default: ``None``).
        progress (bool): tqdm progress over the METIS blocks (default: ``False``).

    Returns:
        RowAssignment: ``row_of_node`` int64 :math:`(N,)` and ``stats``.

    Example::

        >>> ra = assign_rows(edge_index, 2708, (8, 20, 18))
        >>> ra.stats["share_i1"]
    """
    num_nodes = int(num_nodes)
    p, num_parts = _check_args(num_nodes, tt_p_shapes, method, num_parts)
    label_array = None if labels is None else _labels_numpy(labels, num_nodes)
    graph = to_csr(edge_index, num_nodes)
    rowptr, col = csr_numpy(graph)
    method = resolve_method(method, graph.num_edges)
    params = {"method": method, "tt_p_shapes": list(p), "num_parts": num_parts,
              "seed": int(seed), "num_nodes": num_nodes}

    path = key = None
    loaded = None
    if cache_dir is not None:
        key = cache_key(graph, params)
        path = cache_path(cache_dir, method, key)
        loaded = load_rows(path, key, params, math.prod(p))
    if loaded is not None:
        row_of_node, info = loaded
    else:
        t0 = time.perf_counter()
        info = {}
        if method in ("hierarchical", "multilevel"):
            layout = hierarchical_rows if method == "hierarchical" else multilevel_rows
            rows, info["moved"] = layout(rowptr, col, p, seed, progress=progress)
        elif method == "metis-flat":
            rows = metis_flat_rows(rowptr, col, num_parts, seed)
        elif method == "rcm":
            rows = rcm_rows(rowptr, col)
        elif method == "random":
            rows = random_rows(num_nodes, seed)
        else:
            rows = original_rows(num_nodes)
        info["seconds"] = time.perf_counter() - t0
        row_of_node = torch.from_numpy(rows)
        if path is not None:
            save_rows(path, key, params, row_of_node, info)

    stats: dict[str, Any] = {**info, "cache_hit": loaded is not None}
    stats.update(assignment_stats(rowptr, col, row_of_node.numpy(), p, label_array))
    return RowAssignment(row_of_node=row_of_node, method=method, tt_p_shapes=p,
                         num_parts=num_parts, seed=int(seed), stats=stats)
