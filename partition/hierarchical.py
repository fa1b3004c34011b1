r"""Hierarchical row assignment: recursive METIS aligned to the digits of the TT row index.

With row factors :math:`p = (p_1, \dots, p_d)`, level :math:`l < d` splits every block of
level :math:`l - 1` into :math:`p_l` sub-blocks of capacity :math:`p_{l+1} \cdots p_d`
(METIS, then :func:`~partition.repair.repair_capacity`); the block path gives the digits
:math:`i_1 \dots i_{d-1}` and the last digit :math:`i_d` is the slot inside the leaf block.
Nodes METIS keeps together therefore share the slices of the leading TT cores.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from tqdm import tqdm

from partition.metis import part_graph
from partition.repair import repair_capacity

# Target load imbalance when a block needs fewer sub-blocks than p_l: enough sub-blocks are
# used that each is filled to at most capacity / 1.03 on average (METIS' default imbalance).
_FILL_SLACK = 1.03


def _induced_blocks(rowptr: np.ndarray, col: np.ndarray, block: np.ndarray, num_blocks: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Relabel the nodes so each block is a contiguous id range, keeping intra-block edges.

    Returns ``(order, start, sub_rowptr, sub_col)``: ``order`` [N] new position -> node
    (stable, so ascending node id inside a block), ``start`` [num_blocks + 1] the first
    position of each block, and the CSR (new ids) of the block-diagonal subgraph: block b's
    graph is rows ``start[b]:start[b+1]`` with columns shifted by ``start[b]``.
    """
    n = block.size
    order = np.argsort(block, kind="stable")  # [N]
    start = np.zeros(num_blocks + 1, dtype=np.int64)
    np.cumsum(np.bincount(block, minlength=num_blocks), out=start[1:])
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)

    deg = np.diff(rowptr)  # [N]
    same = np.repeat(block, deg) == block[col]  # [nnz] intra-block edge?
    kept = np.zeros(col.size + 1, dtype=np.int64)
    np.cumsum(same, out=kept[1:])
    kept_rowptr = kept[rowptr]  # [N+1] offsets into col[same], original row order
    del kept
    kept_col = col[same]
    del same
    new_deg = np.diff(kept_rowptr)[order]  # [N] rows in the new order
    sub_rowptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(new_deg, out=sub_rowptr[1:])
    # Gather the kept rows in the new order: slot j of new row r reads kept_rowptr[order[r]] + j.
    src = np.repeat(kept_rowptr[:-1][order] - sub_rowptr[:-1], new_deg)
    src += np.arange(src.size)
    sub_col = pos[kept_col[src]]
    return order, start, sub_rowptr, sub_col


def _split_block(rowptr: np.ndarray, col: np.ndarray, num_parts: int, capacity: int,
                 seed: int) -> tuple[np.ndarray, int]:
    """Split one block (its own CSR, local ids) into ``num_parts`` sub-blocks of at most
    ``capacity`` nodes. Returns the sub-block of each node (int64) and the nodes repaired."""
    n = rowptr.size - 1
    if n <= capacity:
        return np.zeros(n, dtype=np.int64), 0  # fits one sub-block: cut nothing
    # Fewer, fuller sub-blocks keep more edges inside them; leave METIS ~3% room.
    k = min(num_parts, math.ceil(n * _FILL_SLACK / capacity))
    # Let METIS use all the slack there is (better cuts), but never more than the room.
    ufactor = max(1, int((capacity * k / n - 1.0) * 1000))
    part = part_graph(rowptr, col, k, seed, ufactor=ufactor)
    return repair_capacity(rowptr, col, part, num_parts, capacity)


def hierarchical_rows(rowptr: np.ndarray, col: np.ndarray, tt_p_shapes: Sequence[int],
                      seed: int = 0, progress: bool = False) -> tuple[np.ndarray, int]:
    r"""Row of every node under the hierarchical (digit-aligned recursive METIS) layout.

    Args:
        rowptr (np.ndarray): CSR offsets of the symmetric graph without self-loops,
            shape ``[N + 1]``.
        col (np.ndarray): CSR neighbour ids, shape ``[nnz]``.
        tt_p_shapes (Sequence[int]): row factors :math:`(p_1, \dots, p_d)`,
            :math:`\prod p \ge N`.
        seed (int): METIS seed (default: ``0``).
        progress (bool): show a tqdm bar over the blocks of each level (default: ``False``).

    Returns:
        (np.ndarray, int): int64 row of every node (injective into :math:`[0, \prod p)`),
        shape ``[N]``, and the number of nodes the capacity repair moved (all levels).
    """
    p = [int(x) for x in tt_p_shapes]
    n = rowptr.size - 1
    block = np.zeros(n, dtype=np.int64)  # block id at the current level, [N]
    num_blocks = 1
    moved = 0
    for level in range(len(p) - 1):
        capacity = math.prod(p[level + 1:])
        if num_blocks == 1:  # the whole graph: no relabelling needed
            order, start, sub_rowptr, sub_col = np.arange(n), np.array([0, n]), rowptr, col
        else:
            order, start, sub_rowptr, sub_col = _induced_blocks(rowptr, col, block, num_blocks)
        digit = np.empty(n, dtype=np.int64)
        bar = tqdm(range(num_blocks), desc=f"partition level {level + 1}/{len(p) - 1}",
                   disable=not progress, leave=False)
        for b in bar:
            s, e = int(start[b]), int(start[b + 1])
            if s == e:
                continue
            lo, hi = int(sub_rowptr[s]), int(sub_rowptr[e])
            # Local ids; the whole graph (s == 0, lo == 0) goes in without a copy.
            part, fixed = _split_block(sub_rowptr[s:e + 1] - lo,
                                       sub_col[lo:hi] - s if s else sub_col[lo:hi], p[level],
                                       capacity, seed)
            digit[order[s:e]] = part
            moved += fixed
        del order, start, sub_rowptr, sub_col
        block = block * p[level] + digit
        num_blocks *= p[level]
    # Last digit: the slot inside the leaf block, by ascending node id.
    order = np.argsort(block, kind="stable")
    first = np.zeros(num_blocks + 1, dtype=np.int64)
    np.cumsum(np.bincount(block, minlength=num_blocks), out=first[1:])
    slot = np.empty(n, dtype=np.int64)
    slot[order] = np.arange(n) - first[block[order]]
    return block * p[-1] + slot, moved
