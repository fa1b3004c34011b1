r"""Coarsening by size-constrained label-propagation clustering.

Each level clusters the nodes (:func:`~partition.propagation.propagate` from singletons,
clusters capped at a node weight) and contracts every cluster into one node: its weight is
the sum of its nodes' weights, and the edge between two coarse nodes weighs the summed
weights of the fine edges between their clusters (``P^T A P`` for the 0/1 cluster matrix
``P``). Edges inside a cluster disappear. On graphs with communities the clusters follow
them, so a level shrinks the graph many-fold, where a matching could at most halve it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from partition.propagation import edge_weights, gather_rows, propagate
from partition.weighted import WeightedGraph

# At most this many label-propagation rounds form the clusters of one level; a round that
# moves < 1% of the nodes ends it.
_CLUSTER_ROUNDS = 3
_CLUSTER_MIN_MOVES = 0.01
# A level must shrink the node count below this fraction, else coarsening stops (it stalls
# on graphs without structure left to contract, e.g. mostly isolated nodes).
_MIN_SHRINK = 0.9
# Fine edges contracted per piece (temporaries ~20 B per edge).
_CONTRACT_EDGES = 1 << 20


@dataclass
class CoarseLevel:
    """One level of coarsening.

    Args:
        fine_to_coarse (np.ndarray): int64 coarse node of every node of the finer graph,
            ``[n_fine]``.
        graph (WeightedGraph): the coarse graph (weighted, no self-loops).
    """

    fine_to_coarse: np.ndarray
    graph: WeightedGraph


def contract(graph: WeightedGraph, cluster: np.ndarray) -> CoarseLevel:
    """Contract every cluster into one node (cluster ids lie in ``[0, n)``, with gaps or not).

    The coarse rows are built in pieces of at most :data:`_CONTRACT_EDGES` fine edges: the
    fine rows of a piece's clusters, their neighbours mapped to clusters, edges inside a
    cluster dropped, and duplicates summed per coarse row (a sort inside each row).

    Args:
        graph (WeightedGraph): the graph to contract.
        cluster (np.ndarray): int64 cluster of every node, ``[n]``.
    """
    used = np.zeros(graph.num_nodes, dtype=np.int64)
    used[cluster] = 1
    coarse_id = np.cumsum(used) - 1  # cluster id -> coarse node, in cluster-id order
    fine_to_coarse = coarse_id[cluster]
    nc = int(used.sum())
    del used, coarse_id
    members = np.argsort(fine_to_coarse, kind="stable")  # fine nodes, cluster after cluster
    first = np.zeros(nc + 1, dtype=np.int64)  # where each cluster starts in `members`
    np.cumsum(np.bincount(fine_to_coarse, minlength=nc), out=first[1:])
    # Fine edges up to each cluster's end, to cut the clusters into pieces of bounded size.
    deg = graph.rowptr[1:] - graph.rowptr[:-1]
    edges_before = np.zeros(nc + 1, dtype=np.int64)
    np.cumsum(np.bincount(fine_to_coarse, weights=deg, minlength=nc).astype(np.int64),
              out=edges_before[1:])
    del deg
    cuts = np.unique(np.r_[np.searchsorted(edges_before, np.arange(0, edges_before[-1],
                                                                    _CONTRACT_EDGES)), nc])
    cuts = cuts[cuts > 0]
    # A merged edge weighs at most the total edge weight: int32 sums while that fits.
    total = graph.num_edges if graph.edge_weight is None else int(graph.edge_weight.sum())
    weight_type = np.int32 if total < 2**31 else np.int64
    counts, cols, weights = [], [], []
    lo = 0
    for hi in cuts:
        nodes = members[first[lo]:first[hi]]
        offset, edge = gather_rows(graph.rowptr, nodes)
        # Coarse row of every gathered edge (local to the piece, non-decreasing) and the
        # cluster at its far end; edges inside a cluster vanish before the sort.
        row = np.repeat(fine_to_coarse[nodes] - lo, np.diff(offset))
        far = fine_to_coarse[graph.col[edge]]
        keep = far != row + lo
        row, far, edge = row[keep], far[keep], edge[keep]
        del offset, keep
        row_start = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=hi - lo), out=row_start[1:])
        index = np.int32 if max(row_start[-1], nc) < 2**31 else np.int64
        piece = scipy.sparse.csr_array(
            (edge_weights(graph, edge).astype(weight_type, copy=False), far.astype(index),
             row_start.astype(index)), shape=(hi - lo, nc))
        del row, far, edge
        piece.sum_duplicates()
        counts.append(np.diff(piece.indptr))
        cols.append(piece.indices)
        weights.append(piece.data)
        lo = hi
    rowptr = np.zeros(nc + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=rowptr[1:])
    node_weight = np.bincount(fine_to_coarse, weights=graph.node_weights(),
                              minlength=nc).astype(np.int64)
    coarse = WeightedGraph(rowptr, np.concatenate(cols), np.concatenate(weights), node_weight)
    return CoarseLevel(fine_to_coarse, coarse)


def coarsen(graph: WeightedGraph, max_node_weight: int, target_nodes: int, seed: int
            ) -> list[CoarseLevel]:
    r"""Contract label-propagation clusters level after level until the graph has at most
    ``target_nodes`` nodes (or stops shrinking).

    Args:
        graph (WeightedGraph): the graph to coarsen.
        max_node_weight (int): no cluster grows above this weight.
        target_nodes (int): stop once a level has at most this many nodes.
        seed (int): seed of the clustering; deterministic for a seed.

    Returns:
        list[CoarseLevel]: finest first; empty when ``graph`` is already small enough.
    """
    levels: list[CoarseLevel] = []
    g = graph
    while g.num_nodes > target_nodes:
        # Singletons: every node with an edge can gain.
        cluster, _ = propagate(g, np.arange(g.num_nodes), g.num_nodes, max_node_weight,
                               _CLUSTER_ROUNDS, seed + len(levels), _CLUSTER_MIN_MOVES,
                               active=g.rowptr[1:] > g.rowptr[:-1])
        level = contract(g, cluster)
        if level.graph.num_nodes > _MIN_SHRINK * g.num_nodes:
            break
        levels.append(level)
        g = level.graph
    return levels
