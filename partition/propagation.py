r"""Size-constrained label propagation, vectorized: the clustering that coarsens a graph and
the refinement that improves a partition on the way back.

A node moves to the neighbouring label that holds most of its edge weight when that is
strictly more than its own label holds, and the label has room: a label's load (the summed
node weights) never exceeds ``max_load`` through a move. Nodes move in batches (random
colour classes); the nodes of a batch choose against the labels as they were before it, and
a label admits its candidates in order of gain (then node id) while they fit. Ties between
equally heavy labels break by a random priority per label and round, so that in clustering,
where every node starts alone and all its neighbours weigh the same, the nodes around a
high-priority node join it together.

The weight every node has into each label is counted without a Python loop per node: in a
dense ``[rows, labels]`` table (one ``bincount``) when the labels are few (refinement), else
by sorting each node's ``(label, weight)`` list and summing duplicates (clustering). Nodes
are evaluated in pieces of about :data:`_PIECE_EDGES` edges, so the temporaries stay small
whatever the graph's size.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse

from partition.weighted import WeightedGraph

# Colour classes per round: a node's neighbours mostly stay put while it chooses, which
# keeps synchronous moves from swapping two nodes back and forth, and clusters grow within
# a round as later classes see the earlier ones' choices.
_COLORS = 16
# Nodes are evaluated in pieces of about this many edges, so that the temporaries (~30 B
# per edge) stay in the last-level cache.
_PIECE_EDGES = 1 << 20
# Up to this many labels, label weights are counted in dense tables of at most
# _DENSE_ENTRIES entries (a bincount, ~4x faster than sorting rows).
_DENSE_LABELS = 1 << 12
_DENSE_ENTRIES = 1 << 20
# Bits of the random priority that breaks ties between labels of equal weight.
_TIE_BITS = 20


def gather_rows(rowptr: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edge slots of the rows of ``nodes``, row after row: ``(offset, edge)``,
    ``offset`` int64 ``[len(nodes) + 1]`` where each row starts in ``edge`` (int64)."""
    deg = rowptr[nodes + 1] - rowptr[nodes]
    offset = np.zeros(nodes.size + 1, dtype=np.int64)
    np.cumsum(deg, out=offset[1:])
    return offset, np.repeat(rowptr[nodes] - offset[:-1], deg) + np.arange(offset[-1])


def edge_weights(graph: WeightedGraph, edge: np.ndarray) -> np.ndarray:
    """Weights of the edge slots ``edge`` (ones, int32, for an unweighted graph)."""
    if graph.edge_weight is None:
        return np.ones(edge.size, dtype=np.int32)
    return graph.edge_weight[edge]


def _pieces(rowptr: np.ndarray, nodes: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive ranges ``(s, e)`` of ``nodes`` with at most ``max_rows`` nodes and about
    :data:`_PIECE_EDGES` edges each (a node with more edges is a piece of its own)."""
    end = np.cumsum(rowptr[nodes + 1] - rowptr[nodes])
    cuts = np.searchsorted(end, np.arange(_PIECE_EDGES, end[-1] if end.size else 0,
                                          _PIECE_EDGES))
    bounds = np.unique(np.r_[0, cuts, np.arange(0, nodes.size, max_rows), nodes.size])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _dense_table(graph: WeightedGraph, nodes: np.ndarray, label: np.ndarray,
                 num_labels: int) -> np.ndarray:
    """int64 ``[m, num_labels]``: the edge weight from every node of ``nodes`` into every
    label (one ``bincount``; the caller bounds ``m * num_labels``)."""
    m = nodes.size
    offset, edge = gather_rows(graph.rowptr, nodes)
    key = np.repeat(np.arange(m) * num_labels, np.diff(offset)) + label[graph.col[edge]]
    weight = None if graph.edge_weight is None else graph.edge_weight[edge]
    return np.bincount(key, weights=weight, minlength=m * num_labels
                       ).astype(np.int64, copy=False).reshape(m, num_labels)


def _sparse_table(graph: WeightedGraph, nodes: np.ndarray, label: np.ndarray,
                  num_labels: int) -> scipy.sparse.csr_array:
    """``[m, num_labels]`` CSR of the edge weight from every node of ``nodes`` into every
    label it has an edge into, labels ascending in each row (each row's ``(label, weight)``
    list sorted and its duplicates summed: scipy's ``sum_duplicates``)."""
    offset, edge = gather_rows(graph.rowptr, nodes)
    index = np.int32 if max(offset[-1], num_labels) < 2**31 else np.int64
    table = scipy.sparse.csr_array((edge_weights(graph, edge),
                                    label[graph.col[edge]].astype(index, copy=False),
                                    offset.astype(index)), shape=(nodes.size, num_labels))
    del edge, offset
    table.sum_duplicates()
    return table


def _best_dense(graph: WeightedGraph, nodes: np.ndarray, label: np.ndarray, num_labels: int,
                priority: np.ndarray, room: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`best_labels` from a dense table."""
    score = _dense_table(graph, nodes, label, num_labels)  # weights, then scores in place
    rows = np.arange(nodes.size)
    own_label = label[nodes]
    own = score[rows, own_label]
    # The own label, labels without an edge and labels without room never win.
    lose = score == 0
    lose |= (room < 1 if graph.node_weight is None  # [k], or [m, k] for weighted nodes
             else room[None, :] < graph.node_weight[nodes][:, None])
    # Weight in the high bits, the label's priority in the low ones.
    score <<= _TIE_BITS
    score |= priority
    score[lose] = -1
    score[rows, own_label] = -1
    target = score.argmax(axis=1)
    top = score[rows, target]
    target[top < 0] = -1
    return target, np.maximum(top, 0) >> _TIE_BITS, own


def _best_sparse(graph: WeightedGraph, nodes: np.ndarray, label: np.ndarray, num_labels: int,
                 priority: np.ndarray, room: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`best_labels` from a sparse table."""
    m = nodes.size
    table = _sparse_table(graph, nodes, label, num_labels)
    counts = np.diff(table.indptr)
    row = np.repeat(np.arange(m), counts)
    is_own = table.indices == label[nodes][row]
    own = np.zeros(m, dtype=np.int64)
    own[row[is_own]] = table.data[is_own]
    score = (table.data.astype(np.int64) << _TIE_BITS) | priority[table.indices]
    full = ((room < 1)[table.indices] if graph.node_weight is None
            else room[table.indices] < graph.node_weight[nodes][row])
    score[is_own | full] = -1
    del is_own
    target = np.full(m, -1, dtype=np.int64)
    best = np.zeros(m, dtype=np.int64)
    filled = np.flatnonzero(counts)
    if filled.size == 0:
        return target, best, own
    top = np.full(m, -1, dtype=np.int64)
    top[filled] = np.maximum.reduceat(score, table.indptr[filled])  # empty rows: no segment
    hit = np.flatnonzero((score == top[row]) & (score >= 0))
    hit = hit[np.r_[True, row[hit][1:] != row[hit][:-1]]]  # equal priorities: the first
    target[row[hit]] = table.indices[hit]
    best[row[hit]] = table.data[hit]
    return target, best, own


def best_labels(graph: WeightedGraph, nodes: np.ndarray, label: np.ndarray, num_labels: int,
                priority: np.ndarray, room: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every node of ``nodes``: the label other than its own, among those with room for
    it, that holds most of its edge weight (ties: highest ``priority[label]``, then lowest
    label), that weight, and the weight into its own label.

    Args:
        graph (WeightedGraph): the graph.
        nodes (np.ndarray): the nodes to evaluate, ``[m]``.
        label (np.ndarray): integer label of every node, ``[n]``.
        num_labels (int): labels lie in ``[0, num_labels)``.
        priority (np.ndarray): int64 tie-break priority of every label, in
            ``[0, 2**_TIE_BITS)``, ``[num_labels]``.
        room (np.ndarray): free weight of every label, ``[num_labels]``: a label with less
            room than a node's weight is not a target for it.

    Returns:
        (np.ndarray, np.ndarray, np.ndarray): ``(target, best, own)``, int64 ``[m]`` each;
        ``target`` is ``-1`` (and ``best`` 0) where a node has no neighbour in another label
        with room.
    """
    dense = num_labels <= _DENSE_LABELS
    best_of = _best_dense if dense else _best_sparse
    found = [best_of(graph, nodes[s:e], label, num_labels, priority, room)
             for s, e in _pieces(graph.rowptr, nodes, max(1, _DENSE_ENTRIES // num_labels)
                                 if dense else nodes.size)]
    if not found:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(3))
    return tuple(np.concatenate(x) for x in zip(*found))


def _may_gain(graph: WeightedGraph, label: np.ndarray) -> np.ndarray:
    """bool ``[n]``: the nodes with less than half their edge weight in their own label (the
    others cannot gain by moving: no other label can hold more). One pass over the edges,
    in pieces of about :data:`_PIECE_EDGES`."""
    n = graph.num_nodes
    out = np.empty(n, dtype=bool)
    for s, e in _pieces(graph.rowptr, np.arange(n), n):
        a, b = graph.rowptr[s], graph.rowptr[e]
        row = np.repeat(np.arange(e - s), np.diff(graph.rowptr[s:e + 1]))
        same = label[graph.col[a:b]] == label[s:e][row]
        w = None if graph.edge_weight is None else graph.edge_weight[a:b]
        own = np.bincount(row[same], weights=None if w is None else w[same], minlength=e - s)
        total = np.bincount(row, weights=w, minlength=e - s)
        out[s:e] = 2 * own < total
    return out


def weight_before(group: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weight of the entries before each one inside its run of equal ``group`` values
    (``group`` sorted); with unit weights, the position inside the run."""
    total = np.cumsum(weight)
    head = np.r_[True, group[1:] != group[:-1]]
    # The running total where each run starts, carried along the run.
    return total - weight - np.maximum.accumulate(np.where(head, total - weight, 0))


def admit(target: np.ndarray, gain: np.ndarray, weight: np.ndarray, room: np.ndarray
          ) -> np.ndarray:
    """Which candidates their target admits: per target, in order of decreasing ``gain``
    (then position), while the admitted weight fits ``room[target]``.

    Args:
        target (np.ndarray): int64 label each candidate asks for, ``[c]``.
        gain (np.ndarray): its priority, ``[c]``.
        weight (np.ndarray): its weight, ``[c]``.
        room (np.ndarray): free weight of every label, ``[num_labels]``.

    Returns:
        np.ndarray: bool ``[c]``.
    """
    order = np.lexsort((np.arange(target.size), -gain, target))
    t, w = target[order], weight[order]
    ok = np.empty(target.size, dtype=bool)
    ok[order] = weight_before(t, w) + w <= room[t]
    return ok


def propagate(graph: WeightedGraph, label: np.ndarray, num_labels: int, max_load: int,
              rounds: int, seed: int, min_moves: float = 0.0,
              active: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    r"""Rounds of size-constrained label propagation (see the module docstring).

    Args:
        graph (WeightedGraph): the graph.
        label (np.ndarray): int64 label of every node in ``[0, num_labels)``, ``[n]``.
        num_labels (int): number of labels.
        max_load (int): most node weight a move may bring a label to; labels already above
            it only lose nodes.
        rounds (int): passes over the nodes; after the first, a pass looks only at nodes
            with a neighbour that moved since they last chose.
        seed (int): seed of the colour classes and the tie-break priorities; the result is
            deterministic for a seed.
        min_moves (float): stop after a round that moved at most this fraction of the nodes
            (default: ``0.0``, stop when a round moves none).
        active (np.ndarray, optional): bool ``[n]``, the nodes the first round looks at
            (default: ``None``, those with less than half their edge weight in their own
            label; the others cannot gain by moving).

    Returns:
        (np.ndarray, int): the new labels (a new int64 array ``[n]``) and the moves made.
    """
    n = graph.num_nodes
    # int32 labels when they fit: every gather of a neighbour's label moves half the bytes.
    label = label.astype(np.int32 if num_labels < 2**31 else np.int64)
    weight = graph.node_weights()
    load = np.bincount(label, weights=weight, minlength=num_labels).astype(np.int64)
    rng = np.random.default_rng(seed)
    # Later rounds look at the nodes with a neighbour that moved since they last looked.
    active = _may_gain(graph, label) if active is None else active.copy()
    moves = 0
    for _ in range(rounds):
        color = rng.integers(0, _COLORS, n, dtype=np.int32)
        priority = rng.integers(0, 1 << _TIE_BITS, num_labels)
        moved = 0
        for c in range(_COLORS):
            nodes = np.flatnonzero((color == c) & active)
            active[nodes] = False
            target, best, own = best_labels(graph, nodes, label, num_labels, priority,
                                            max_load - load)
            want = np.flatnonzero(best > own)
            if want.size == 0:
                continue
            go = want[admit(target[want], best[want] - own[want], weight[nodes[want]],
                            max_load - load)]
            v, dest = nodes[go], target[go]
            np.subtract.at(load, label[v], weight[v])
            np.add.at(load, dest, weight[v])
            label[v] = dest
            active[graph.col[gather_rows(graph.rowptr, v)[1]]] = True
            moved += go.size
        moves += moved
        if moved <= min_moves * n:
            break
    return label.astype(np.int64), moves
