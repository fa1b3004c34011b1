r"""Hierarchical row assignment: recursive METIS aligned to the digits of the TT row index.

With row factors :math:`p = (p_1, \dots, p_d)`, level :math:`l < d` splits every block of
level :math:`l - 1` into :math:`p_l` sub-blocks of capacity :math:`p_{l+1} \cdots p_d`
(METIS, then :func:`~partition.repair.repair_capacity`); the block path gives the digits
:math:`i_1 \dots i_{d-1}` and the last digit :math:`i_d` is the slot inside the leaf block.
Nodes METIS keeps together therefore share the slices of the leading TT cores.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from partition.memory import MULTILEVEL_BYTES_PER_EDGE
from partition.metis import part_graph
from partition.propagation import gather_rows
from partition.repair import repair_capacity

# Target load imbalance when a block needs fewer sub-blocks than p_l: enough sub-blocks are
# used that each is filled to at most capacity / 1.03 on average (METIS' default imbalance).
FILL_SLACK = 1.03

# What a METIS call too big for the memory left should do instead.
_ADVICE = (f"method='multilevel' (or 'auto') coarsens the graph first and needs about "
           f"{MULTILEVEL_BYTES_PER_EDGE} B per stored edge")

# ``split(rowptr, col, num_parts, capacity, seed) -> (part, nodes repaired)``: cuts one block
# (its own CSR, local ids) into at most ``num_parts`` sub-blocks of at most ``capacity`` nodes.
Splitter = Callable[[np.ndarray, np.ndarray, int, int, int], tuple[np.ndarray, int]]


def _block_layout(block: np.ndarray, num_blocks: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes grouped by block: ``(order, start, local)``, ``order`` [N] the nodes block after
    block (ascending id inside a block), ``start`` [num_blocks + 1] where each block begins
    in ``order``, ``local`` [N] every node's position inside its block."""
    order = np.argsort(block, kind="stable")
    start = np.zeros(num_blocks + 1, dtype=np.int64)
    np.cumsum(np.bincount(block, minlength=num_blocks), out=start[1:])
    local = np.empty(block.size, dtype=np.int64)
    local[order] = np.arange(block.size) - np.repeat(start[:-1], np.diff(start))
    return order, start, local


def _block_graph(rowptr: np.ndarray, col: np.ndarray, nodes: np.ndarray, block: np.ndarray,
                 local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The subgraph induced by ``nodes`` (one block, ascending ids) in local ids: CSR
    ``(sub_rowptr, sub_col)``, rows in the order of ``nodes``, each row's neighbours in the
    graph's order. Touches only the rows of ``nodes``, so one block at a time needs memory
    in proportion to that block."""
    offset, edge = gather_rows(rowptr, nodes)  # offset: rows of `nodes` in `nbr`
    nbr = col[edge]  # [sum deg]
    del edge
    keep = block[nbr] == block[nodes[0]]
    kept = np.zeros(keep.size + 1, dtype=np.int64)
    np.cumsum(keep, out=kept[1:])
    return kept[offset], local[nbr[keep]]


def split_block(rowptr: np.ndarray, col: np.ndarray, num_parts: int, capacity: int,
                seed: int) -> tuple[np.ndarray, int]:
    """Split one block (its own CSR, local ids) into ``num_parts`` sub-blocks of at most
    ``capacity`` nodes. Returns the sub-block of each node (int64) and the nodes repaired."""
    n = rowptr.size - 1
    if n <= capacity:
        return np.zeros(n, dtype=np.int64), 0  # fits one sub-block: cut nothing
    # Fewer, fuller sub-blocks keep more edges inside them; leave METIS ~3% room.
    k = min(num_parts, math.ceil(n * FILL_SLACK / capacity))
    # Let METIS use all the slack there is (better cuts), but never more than the room.
    ufactor = max(1, int((capacity * k / n - 1.0) * 1000))
    part = part_graph(rowptr, col, k, seed, ufactor=ufactor, advice=_ADVICE)
    return repair_capacity(rowptr, col, part, num_parts, capacity)


def hierarchical_rows(rowptr: np.ndarray, col: np.ndarray, tt_p_shapes: Sequence[int],
                      seed: int = 0, progress: bool = False, split: Splitter = split_block
                      ) -> tuple[np.ndarray, int]:
    r"""Row of every node under the hierarchical (digit-aligned recursive METIS) layout.

    Args:
        rowptr (np.ndarray): CSR offsets of the symmetric graph without self-loops,
            shape ``[N + 1]``.
        col (np.ndarray): CSR neighbour ids, shape ``[nnz]``.
        tt_p_shapes (Sequence[int]): row factors :math:`(p_1, \dots, p_d)`,
            :math:`\prod p \ge N`.
        seed (int): METIS seed (default: ``0``).
        progress (bool): show a tqdm bar over the blocks of each level (default: ``False``).
        split (Splitter): cuts one block into sub-blocks of bounded size (default:
            :func:`split_block`, METIS on the block itself).

    Returns:
        (np.ndarray, int): int64 row of every node (injective into :math:`[0, \prod p)`),
        shape ``[N]``, and the number of nodes the capacity repair moved (all levels).

    With :func:`split_block`, a METIS call whose forecast peak exceeds the memory available
    warns before it starts, pointing to the multilevel method.
    """
    p = [int(x) for x in tt_p_shapes]
    n = rowptr.size - 1
    block = np.zeros(n, dtype=np.int64)  # block id at the current level, [N]
    num_blocks = 1
    moved = 0
    for level in range(len(p) - 1):
        capacity = math.prod(p[level + 1:])
        order, start, local = _block_layout(block, num_blocks)
        digit = np.empty(n, dtype=np.int64)
        bar = tqdm(range(num_blocks), desc=f"partition level {level + 1}/{len(p) - 1}",
                   disable=not progress, leave=False)
        for b in bar:
            nodes = order[start[b]:start[b + 1]]
            if nodes.size == 0:
                continue
            # The whole graph (one block) goes in without a copy.
            sub = (rowptr, col) if nodes.size == n else _block_graph(rowptr, col, nodes,
                                                                     block, local)
            part, fixed = split(*sub, p[level], capacity, seed)
            digit[nodes] = part
            moved += fixed
            del sub
        del order, start, local
        block = block * p[level] + digit
        num_blocks *= p[level]
    # Last digit: the slot inside the leaf block, by ascending node id.
    return block * p[-1] + _block_layout(block, num_blocks)[2], moved
