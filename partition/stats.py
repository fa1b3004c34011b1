"""Quality of a row assignment: how many edges and labels the leading TT digits keep
together."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

# Edges per chunk when counting cut edges.
_CHUNK_EDGES = 1 << 22


def _prefixes(rows: np.ndarray, tt_p_shapes: Sequence[int]) -> list[np.ndarray]:
    """Block id of every node at levels 1..d-1: the leading digits ``(i1, ..., il)`` as one
    integer, ``rows // prod(p[l:])``."""
    p = list(tt_p_shapes)
    return [rows // math.prod(p[level:]) for level in range(1, len(p))]


def _cut(rowptr: np.ndarray, col: np.ndarray, block: np.ndarray) -> int:
    """Stored edges whose endpoints lie in different blocks, counted in row ranges of about
    :data:`_CHUNK_EDGES` edges (the temporaries stay small whatever the graph)."""
    n = rowptr.size - 1
    bounds = np.unique(np.r_[np.searchsorted(rowptr, np.arange(0, col.size, _CHUNK_EDGES)), n])
    cut, s = 0, 0
    for e in bounds[bounds > 0].tolist():
        a, b = rowptr[s], rowptr[e]
        cut += int(np.count_nonzero(np.repeat(block[s:e], np.diff(rowptr[s:e + 1]))
                                    != block[col[a:b]]))
        s = e
    return cut


def _purity(block: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of labelled nodes whose label is the majority label of their block."""
    keep = labels >= 0
    block, labels = block[keep], labels[keep]
    if block.size == 0:
        return float("nan")
    num_labels = int(labels.max()) + 1
    key, count = np.unique(block * num_labels + labels, return_counts=True)
    owner = key // num_labels  # sorted, so each block's (block, label) counts are a run
    head = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    return float(np.maximum.reduceat(count, head).sum() / block.size)


def assignment_stats(rowptr: np.ndarray, col: np.ndarray, rows: np.ndarray,
                     tt_p_shapes: Sequence[int], labels: np.ndarray | None = None
                     ) -> dict[str, Any]:
    r"""Edge cut, shared prefixes and label purity of each level of a row assignment.

    Level :math:`l` groups nodes by their first :math:`l` digits :math:`(i_1 \dots i_l)`,
    for :math:`l = 1 \dots d-1` (the full row is unique per node, so level :math:`d` would
    share nothing).

    Args:
        rowptr (np.ndarray): CSR offsets of the symmetric graph without self-loops or
            duplicates, shape ``[N + 1]``.
        col (np.ndarray): CSR neighbour ids, shape ``[nnz]`` (each edge twice).
        rows (np.ndarray): int64 row of every node, shape ``[N]``.
        tt_p_shapes (Sequence[int]): row factors :math:`(p_1, \dots, p_d)`.
        labels (np.ndarray, optional): integer label of every node, negative for unlabelled,
            shape ``[N]``; adds ``purity`` (default: ``None``).

    Returns:
        dict: ``num_edges`` (undirected), ``edge_cut`` (list over levels, undirected edges
        whose endpoints differ in the level's prefix), ``share`` (list, ``1 - cut / edges``),
        ``share_i1`` and, when ``d >= 3``, ``share_i12``; with labels ``purity`` (list over
        levels) and ``purity_i1``.
    """
    num_edges = col.size // 2
    stats: dict[str, Any] = {"num_edges": int(num_edges), "edge_cut": [], "share": []}
    prefixes = _prefixes(rows, tt_p_shapes)
    for prefix in prefixes:
        # Each undirected edge is stored twice with the same verdict: halve the count.
        cut = _cut(rowptr, col, prefix) // 2
        stats["edge_cut"].append(cut)
        stats["share"].append(1.0 - cut / num_edges if num_edges else float("nan"))
    if prefixes:
        stats["share_i1"] = stats["share"][0]
    if len(prefixes) >= 2:
        stats["share_i12"] = stats["share"][1]
    if labels is not None:
        stats["purity"] = [_purity(prefix, labels) for prefix in prefixes]
        if prefixes:
            stats["purity_i1"] = stats["purity"][0]
    return stats
