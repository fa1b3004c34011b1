r"""Multilevel hierarchical row assignment: the digit-aligned hierarchy of
:mod:`partition.hierarchical`, with every block cut by a multilevel scheme, so that METIS only
ever sees a small graph and peak memory stays a small multiple of the CSR.

Splitting a block of :math:`n` nodes into :math:`p_l` sub-blocks of capacity
:math:`c = p_{l+1} \cdots p_d` (:math:`k = \lceil 1.03 n / c \rceil \le p_l` of them used, as
:func:`~partition.hierarchical.split_block` does, each held to METIS' default 3% over
:math:`n / k`, so the next level has room to balance):

1. **coarsen** (:func:`~partition.coarsen.coarsen`): contract size-constrained
   label-propagation clusters (each at most :math:`c /` :data:`_CLUSTER_DIVISOR` nodes) level
   after level, until at most :data:`_COARSE_NODES_PER_PART` nodes per sub-block are left;
2. **partition** the coarsest graph with METIS (k-way), node weights = fine nodes, edge
   weights = fine edges, so capacities are counted in fine nodes. A block already that
   small is not coarsened, and METIS bisects it recursively;
3. **uncoarsen**, coarsest level first: repair capacity
   (:func:`~partition.repair.repair_capacity`, node-weighted) and refine by label
   propagation (:func:`~partition.propagation.propagate`: nodes move to the sub-block
   holding most of their edge weight while it has room), then project to the finer level.
   Coarse levels may overfill a sub-block a little (:func:`_tolerance`), so heavy coarse
   nodes can still move; the block itself is refined within 0.3% and then repaired exactly.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from partition.coarsen import coarsen
from partition.hierarchical import FILL_SLACK, hierarchical_rows
from partition.memory import MULTILEVEL_BYTES_PER_EDGE, warn_if_short
from partition.metis import DEFAULT_UFACTOR, part_graph
from partition.propagation import propagate
from partition.repair import repair_capacity
from partition.weighted import WeightedGraph

# Clusters weigh at most capacity / this: METIS packs >= this many coarse nodes into a
# sub-block, enough to balance them, and small clusters leave METIS more structure to see.
_CLUSTER_DIVISOR = 32
# Coarsening stops once the graph has at most this many nodes per sub-block. A block that
# small from the start is not coarsened: METIS bisects it recursively, which keeps more edges
# inside the many small sub-blocks of such blocks than k-way METIS (docs/benchmarks.md).
_COARSE_NODES_PER_PART = 320
# Refinement rounds at every level (stopping early once a round moves < 0.1% of the nodes).
_REFINE_ROUNDS = 4
_REFINE_MIN_MOVES = 1e-3


def _tolerance(depth: int) -> float:
    """How far over capacity a sub-block may be at coarsening depth ``depth`` (0 = the block
    itself), as a fraction: coarse levels get room to move heavy nodes, the finest levels
    little, so the final exact repair moves few nodes."""
    return min(0.03, 0.003 * 3**depth)


def multilevel_split(rowptr: np.ndarray, col: np.ndarray, num_parts: int, capacity: int,
                     seed: int) -> tuple[np.ndarray, int]:
    """Split one block (its own CSR, local ids) into ``num_parts`` sub-blocks of at most
    ``capacity`` nodes by coarsening, METIS and refinement (see the module docstring).
    Returns the sub-block of each node (int64 ``[n]``) and the nodes the final repair moved.
    """
    n = rowptr.size - 1
    if n <= capacity:
        return np.zeros(n, dtype=np.int64), 0  # fits one sub-block: cut nothing
    k = min(num_parts, math.ceil(n * FILL_SLACK / capacity))
    # Sub-blocks as even as METIS keeps them by default: a full sub-block leaves the next
    # level no room to balance its own sub-blocks.
    capacity = min(capacity, math.ceil(n / k * (1 + DEFAULT_UFACTOR / 1000)))
    fine = WeightedGraph(rowptr, col)
    levels = coarsen(fine, max(1, capacity // _CLUSTER_DIVISOR), _COARSE_NODES_PER_PART * k,
                     seed)
    graphs = [fine, *(level.graph for level in levels)]
    coarsest = graphs[-1]
    room = int(capacity * (1 + _tolerance(len(levels))))
    part = part_graph(coarsest.rowptr, coarsest.col, k, seed,
                      ufactor=max(1, int((room * k / n - 1.0) * 1000)),
                      node_weight=coarsest.node_weight, edge_weight=coarsest.edge_weight,
                      recursive=not levels)
    for depth in range(len(levels), -1, -1):
        g = graphs[depth]
        room = int(capacity * (1 + _tolerance(depth)))
        if depth:  # the finest level is repaired exactly below
            part, _ = repair_capacity(g.rowptr, g.col, part, num_parts, room, g.node_weight,
                                      g.edge_weight)
        part, _ = propagate(g, part, num_parts, room, _REFINE_ROUNDS, seed + depth,
                            _REFINE_MIN_MOVES)
        if depth:
            part = part[levels[depth - 1].fine_to_coarse]
    return repair_capacity(rowptr, col, part, num_parts, capacity)


def multilevel_rows(rowptr: np.ndarray, col: np.ndarray, tt_p_shapes: Sequence[int],
                    seed: int = 0, progress: bool = False) -> tuple[np.ndarray, int]:
    r"""Row of every node under the multilevel hierarchical layout: the digits of
    :func:`~partition.hierarchical.hierarchical_rows`, every block cut by
    :func:`multilevel_split`.

    Args:
        rowptr (np.ndarray): CSR offsets of the symmetric graph without self-loops,
            shape ``[N + 1]``.
        col (np.ndarray): CSR neighbour ids, shape ``[nnz]``.
        tt_p_shapes (Sequence[int]): row factors :math:`(p_1, \dots, p_d)`,
            :math:`\prod p \ge N`.
        seed (int): seed of the clustering, METIS and the refinement (default: ``0``).
        progress (bool): show a tqdm bar over the blocks of each level (default: ``False``).

    Returns:
        (np.ndarray, int): int64 row of every node (injective into :math:`[0, \prod p)`),
        shape ``[N]``, and the number of nodes the final capacity repairs moved.

    Warns (``RuntimeWarning``) before it starts when its forecast peak,
    :data:`~partition.memory.MULTILEVEL_BYTES_PER_EDGE` per stored edge beyond the CSR,
    exceeds the memory available.
    """
    warn_if_short(f"the multilevel partition of {rowptr.size - 1:,} nodes and {col.size:,} "
                  f"stored edges", MULTILEVEL_BYTES_PER_EDGE * col.size)
    return hierarchical_rows(rowptr, col, tt_p_shapes, seed, progress, split=multilevel_split)
