"""The one door to METIS (pymetis): graph preparation, seeded options, partition call."""
from __future__ import annotations

import numpy as np
import torch

from gnn_tt.common.checks import check_positive_int
from gnn_tt.data.graph import CSRGraph
from partition.memory import METIS_BYTES_PER_EDGE, warn_if_short

# METIS' own default load imbalance for k-way partitioning: 1.030 (ufactor 30, per mille).
DEFAULT_UFACTOR = 30


def to_csr(edge_index: torch.Tensor | CSRGraph, num_nodes: int) -> CSRGraph:
    r"""The symmetric graph METIS needs: both directions of every edge, self-loops and
    duplicate edges removed, neighbours sorted.

    Args:
        edge_index (torch.Tensor or CSRGraph): integer node ids, shape ``[2, E]`` (either or
            both directions of an edge), or an already built :class:`CSRGraph`, which is
            symmetric and duplicate-free by construction and is used as it is.
        num_nodes (int): number of nodes; every id must lie in ``[0, num_nodes)``.
    """
    if isinstance(edge_index, CSRGraph):
        if edge_index.num_nodes != num_nodes:
            raise ValueError(f"graph has num_nodes={edge_index.num_nodes}, but "
                             f"num_nodes={num_nodes} was given")
        return edge_index.to("cpu")
    return CSRGraph.from_edge_index(edge_index.cpu(), num_nodes, symmetrize=True,
                                    remove_self_loops=True)


def csr_numpy(graph: CSRGraph) -> tuple[np.ndarray, np.ndarray]:
    """``(rowptr int64 [N+1], col int32/int64 [nnz])`` as numpy arrays (shared memory)."""
    return graph.rowptr.numpy(), graph.col.numpy()


def part_graph(rowptr: np.ndarray, col: np.ndarray, num_parts: int, seed: int,
               ufactor: int = DEFAULT_UFACTOR, node_weight: np.ndarray | None = None,
               edge_weight: np.ndarray | None = None, recursive: bool = False,
               advice: str = "") -> np.ndarray:
    r"""METIS partition of a symmetric graph without self-loops into ``num_parts`` parts.

    Before a call whose forecast peak (:data:`~partition.memory.METIS_BYTES_PER_EDGE` per
    stored edge) exceeds the memory available, it warns, naming ``advice``.

    Args:
        rowptr (np.ndarray): CSR offsets, shape ``[n + 1]``.
        col (np.ndarray): CSR neighbour ids in ``[0, n)``, shape ``[nnz]``.
        num_parts (int): number of parts ``k >= 1``.
        seed (int): METIS random seed; the result is deterministic for a given seed.
        ufactor (int): allowed load imbalance in per mille: parts hold at most
            ``(1 + ufactor / 1000) * n / k`` nodes (node weight), approximately
            (default: ``30``).
        node_weight (np.ndarray, optional): positive integer weight of every node, ``[n]``
            (default: ``None``, all 1).
        edge_weight (np.ndarray, optional): positive integer weight of every stored edge,
            the same in both directions, ``[nnz]`` (default: ``None``, all 1).
        recursive (bool): recursive bisection (``METIS_PartGraphRecursive``) instead of
            the direct k-way scheme (default: ``False``; pymetis itself bisects for
            ``num_parts <= 8``).
        advice (str): what to do instead when memory looks short (default: ``""``).

    Returns:
        np.ndarray: int64 part of every node, shape ``[n]``, values in ``[0, k)``.
    """
    try:
        import pymetis
    except ImportError as err:
        raise ImportError("partitioning with METIS needs the 'pymetis' package "
                          "(pip install pymetis)") from err
    n = rowptr.shape[0] - 1
    check_positive_int("num_parts", num_parts)
    if num_parts == 1 or n == 0:
        return np.zeros(n, dtype=np.int64)
    per_edge = METIS_BYTES_PER_EDGE + (8 if edge_weight is not None else 0)
    warn_if_short(f"METIS on {n:,} nodes and {col.size:,} stored edges", per_edge * col.size,
                  advice)
    # pymetis is built with 64-bit idx_t: int64 arrays are passed without a copy.
    adjacency = pymetis.CSRAdjacency(np.ascontiguousarray(rowptr, dtype=np.int64),
                                     np.ascontiguousarray(col, dtype=np.int64))
    weights = {name: np.ascontiguousarray(w, dtype=np.int64)
               for name, w in (("vweights", node_weight), ("eweights", edge_weight))
               if w is not None}
    options = pymetis.Options(seed=int(seed), ufactor=int(ufactor))
    result = pymetis.part_graph(int(num_parts), adjacency, options=options,
                                recursive=True if recursive else None, **weights)
    return np.frombuffer(result.vertex_part, dtype=np.int64).copy()
