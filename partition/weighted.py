"""``WeightedGraph``: a symmetric CSR graph with integer node and edge weights, the graph the
multilevel partitioner coarsens (a coarse node weighs the fine nodes it stands for, a coarse
edge the fine edges it merges)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WeightedGraph:
    r"""A symmetric graph without self-loops in CSR form, with positive integer weights.

    Args:
        rowptr (np.ndarray): int64 offsets, shape ``[n + 1]``.
        col (np.ndarray): neighbour ids (int32 or int64, any order inside a row), shape
            ``[nnz]``; every undirected edge is stored in both directions.
        edge_weight (np.ndarray, optional): weight of every stored edge, equal in both
            directions, shape ``[nnz]`` (default: ``None``, every edge weighs 1).
        node_weight (np.ndarray, optional): int64 weight of every node, shape ``[n]``
            (default: ``None``, every node weighs 1).
    """

    rowptr: np.ndarray
    col: np.ndarray
    edge_weight: np.ndarray | None = None
    node_weight: np.ndarray | None = None

    @property
    def num_nodes(self) -> int:
        return self.rowptr.size - 1

    @property
    def num_edges(self) -> int:
        """Stored (directed) edges."""
        return self.col.size

    def node_weights(self) -> np.ndarray:
        """int64 ``[n]``: the node weights, ones when the graph has none."""
        if self.node_weight is None:
            return np.ones(self.num_nodes, dtype=np.int64)
        return self.node_weight

    def total_weight(self) -> int:
        return self.num_nodes if self.node_weight is None else int(self.node_weight.sum())
