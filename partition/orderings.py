"""The flat node orderings: dataset order, seeded random, reverse Cuthill-McKee, and one
k-way METIS with nodes sorted by part. Each returns the row of every node (int64 [N])."""
from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import reverse_cuthill_mckee

from partition.metis import part_graph


def rows_from_order(order: np.ndarray) -> np.ndarray:
    """Invert a node order: ``order[r]`` is the node at row ``r``; returns the row of every
    node (int64 ``[N]``)."""
    rows = np.empty(order.size, dtype=np.int64)
    rows[order] = np.arange(order.size)
    return rows


def original_rows(num_nodes: int) -> np.ndarray:
    """The dataset order: node ``v`` at row ``v``."""
    return np.arange(num_nodes, dtype=np.int64)


def random_rows(num_nodes: int, seed: int) -> np.ndarray:
    """A seeded uniformly random permutation (numpy PCG64, so identical on every platform)."""
    return np.random.default_rng(seed).permutation(num_nodes).astype(np.int64)


def rcm_rows(rowptr: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Reverse Cuthill-McKee order of the symmetric graph (scipy): small bandwidth, so
    neighbours get nearby rows."""
    n = rowptr.size - 1
    adj = scipy.sparse.csr_matrix((np.ones(col.size, dtype=np.int8), col, rowptr), shape=(n, n))
    return rows_from_order(reverse_cuthill_mckee(adj, symmetric_mode=True))


def metis_flat_rows(rowptr: np.ndarray, col: np.ndarray, num_parts: int, seed: int
                    ) -> np.ndarray:
    """One ``num_parts``-way METIS partition, nodes sorted by part (by id inside a part):
    each part is a contiguous range of rows. ``num_parts = 0`` is the dataset order (the
    reference code's convention)."""
    n = rowptr.size - 1
    if num_parts == 0:
        return original_rows(n)
    part = part_graph(rowptr, col, num_parts, seed)
    return rows_from_order(np.argsort(part, kind="stable"))
