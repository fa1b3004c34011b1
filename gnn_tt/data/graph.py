"""Compressed sparse row (CSR) graph: the one graph container the sampler, the partitioner
and the trainer share."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

# Node ids up to this bound fit the int32 column array (half the memory of int64).
_INT32_MAX = 2**31 - 1
# Directed edges handled per step of a CSR build: bounds each step's temporaries (about
# 50 bytes per edge, ~50 MB) independently of the graph's size.
_STEP = 1 << 20


def _check_edge_index(edge_index: torch.Tensor, num_nodes: int | None, name: str) -> int:
    if not isinstance(edge_index, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"{name} must have shape [2, E], got {list(edge_index.shape)}")
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer node ids, got dtype {edge_index.dtype}")
    if edge_index.numel():
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0:
            raise ValueError(f"{name} holds a negative node id ({lo})")
        if num_nodes is None:
            num_nodes = hi + 1
        elif hi >= num_nodes:
            raise ValueError(f"{name} holds node id {hi}, outside [0, num_nodes={num_nodes})")
    elif num_nodes is None:
        num_nodes = 0
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
    return int(num_nodes)


def _id_dtype(num_nodes: int) -> torch.dtype:
    return torch.int32 if num_nodes <= _INT32_MAX else torch.long


def _pieces(chunks: Iterable[torch.Tensor], num_nodes: int, symmetrize: bool,
            remove_self_loops: bool, validate: bool
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(row, nbr)`` of at most ``_STEP`` directed edges at a time, on the host in the id
    dtype, in input order (with ``symmetrize``, each edge followed by its reverse)."""
    id_dtype = _id_dtype(num_nodes)
    step = max(_STEP // 2, 1) if symmetrize else _STEP
    for i, chunk in enumerate(chunks):
        if validate:
            _check_edge_index(chunk, num_nodes, f"chunks[{i}]")
        for s in range(0, chunk.size(1), step):
            src = chunk[0, s:s + step].to("cpu", id_dtype)
            dst = chunk[1, s:s + step].to("cpu", id_dtype)
            if remove_self_loops:
                keep = src != dst
                src, dst = src[keep], dst[keep]
            if symmetrize:
                # Interleaved, so a row receives its entries in input order: rows of an
                # input sorted by undirected key come out sorted (see _dedupe_rows).
                yield torch.stack([src, dst], 1).view(-1), torch.stack([dst, src], 1).view(-1)
            else:
                yield src, dst


def _build_csr(chunks: Iterable[torch.Tensor], num_nodes: int, symmetrize: bool,
               remove_self_loops: bool, validate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked build behind every constructor of :class:`CSRGraph`: ``(rowptr, col)``.

    1. Count each node's entries, duplicates included (``rowptr`` of the raw lists).
    2. Scatter every step's entries to per-node cursors in ``col``, each row in input order.
    3. Sort and deduplicate the rows in node ranges of about ``_STEP`` entries, compacting
       ``col`` in place; a range whose rows are already ascending skips the sort.

    Beyond the output, the peak holds one int64 cursor per node, one step's temporaries, and
    the entries that deduplication removes until ``col`` is trimmed at the end.
    """
    n = num_nodes
    rowptr = torch.zeros(n + 1, dtype=torch.long)
    counts = rowptr[1:]
    for row, _ in _pieces(chunks, n, symmetrize, remove_self_loops, validate):
        counts.index_add_(0, row, torch.ones(1, dtype=torch.long).expand(row.numel()))
    counts.cumsum_(0)

    # numpy owns col's memory so that deduplication can trim it in place (realloc) rather
    # than copy it.
    buf = np.empty(int(rowptr[-1]), dtype=np.int32 if _id_dtype(n) == torch.int32 else np.int64)
    col = torch.from_numpy(buf)
    cursor = rowptr[:-1].clone()  # [n] next free slot of each row
    for row, nbr in _pieces(chunks, n, symmetrize, remove_self_loops, validate=False):
        # A stable sort by row keeps each row's entries in input order.
        row, order = torch.sort(row, stable=True)
        nbr = nbr.index_select(0, order)
        del order
        rows, run_of, run = torch.unique_consecutive(row, return_inverse=True,
                                                     return_counts=True)  # [r], [m], [r]
        start = cursor.index_select(0, rows)
        end = start + run
        if bool((end > rowptr[1:].index_select(0, rows)).any()):
            raise ValueError("chunks yielded more edges on the second pass than on the first; "
                             "iterating over chunks must yield the same edges every time")
        cursor.index_copy_(0, rows.long(), end)
        # Entry j of the sorted step, in run k, lands at start[k] + j - (first entry of k).
        dest = (start - (torch.cumsum(run, 0) - run)).index_select(0, run_of)
        dest += torch.arange(row.numel())
        col.scatter_(0, dest, nbr)
    if not torch.equal(cursor, rowptr[1:]):
        raise ValueError("chunks yielded fewer edges on the second pass than on the first; "
                         "iterating over chunks must yield the same edges every time")

    kept = _dedupe_rows(rowptr, col, n, degree_out=cursor)
    torch.cumsum(cursor, 0, out=rowptr[1:])
    if kept < buf.size:
        del col
        # In-place trim: col was buf's only other holder (numpy's own refcheck also refuses
        # under a tracer such as coverage, hence the explicit check).
        assert sys.getrefcount(buf) <= 2, "col's buffer is still shared"
        buf.resize(kept, refcheck=False)
        col = torch.from_numpy(buf)
    return rowptr, col


def _dedupe_rows(rowptr: torch.Tensor, col: torch.Tensor, num_nodes: int,
                 degree_out: torch.Tensor) -> int:
    """Sort and deduplicate every row ``col[rowptr[v]:rowptr[v+1]]``, moving the results to
    the front of ``col`` in row order; write each row's new length to ``degree_out`` and
    return the total."""
    key_base = max(num_nodes, 1)
    # Node ranges of about _STEP entries (more when one row alone holds more).
    cuts = torch.searchsorted(rowptr, torch.arange(0, col.numel(), _STEP))
    cuts = torch.unique_consecutive(torch.cat([torch.tensor([0]), cuts,
                                               torch.tensor([num_nodes])]))
    written = 0
    for v0, v1 in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        p0 = int(rowptr[v0])
        starts = rowptr[v0:v1 + 1] - p0  # [v1 - v0 + 1] row offsets inside the range
        seg = col[p0:int(rowptr[v1])]  # [L], a view
        length = seg.numel()
        head = torch.zeros(length, dtype=torch.bool)  # [L] first entry of a non-empty row
        head[starts[:-1][starts[:-1] < length]] = True
        moved = bool(((seg[1:] < seg[:-1]) & ~head[1:]).any())
        if moved:
            # Sort by (row, id): the row is the major key, so every row keeps its slots.
            # At most _STEP + 1 rows start in a range, so keys fit int64 for n < 2^42.
            row = torch.cumsum(head, 0) - 1  # [L] int64, dense row index
            key = row * key_base + seg
            key.numpy().sort()  # in place: no index array
            seg = key.sub_(row.mul_(key_base)).to(col.dtype)
            del row, key
        keep = head.clone()
        keep[1:] |= seg[1:] != seg[:-1]
        # Kept entries per row: differences of the running count at the row offsets.
        running = torch.zeros(length + 1, dtype=torch.long)
        torch.cumsum(keep, 0, out=running[1:])
        degree_out[v0:v1] = running[starts[1:]] - running[starts[:-1]]
        kept = int(running[-1])
        if moved or kept < length or written < p0:
            col[written:written + kept] = seg[keep]
        written += kept
    return written


class _UpperKeyEdges:
    """The undirected edges ``(a, b)`` of upper keys ``a * n + b`` as [2, e] chunks, decoded
    afresh on every iteration (the chunked build reads its input twice)."""

    def __init__(self, keys: torch.Tensor, num_nodes: int) -> None:
        self.keys, self.num_nodes = keys, num_nodes

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = max(self.num_nodes, 1)
        for s in range(0, self.keys.numel(), _STEP):
            k = self.keys[s:s + _STEP]
            a = k // n
            yield torch.stack([a, k - a * n])


@dataclass
class CSRGraph:
    r"""A graph in CSR form: the neighbours of node ``v`` are ``col[rowptr[v]:rowptr[v+1]]``,
    sorted ascending, without duplicates.

    Args:
        rowptr (torch.Tensor): int64 offsets, shape ``[num_nodes + 1]``.
        col (torch.Tensor): neighbour ids, int32 when ``num_nodes`` fits, else int64,
            shape ``[num_edges]`` (directed edges: an undirected edge counts twice).
        num_nodes (int): number of nodes.
    """

    rowptr: torch.Tensor
    col: torch.Tensor
    num_nodes: int

    @classmethod
    def from_edge_index(cls, edge_index: torch.Tensor, num_nodes: int | None = None,
                        symmetrize: bool = True, remove_self_loops: bool = True) -> "CSRGraph":
        r"""Build from a COO ``edge_index`` (row 0 = source, row 1 = destination), in steps
        of bounded memory (:meth:`from_edge_chunks`).

        Args:
            edge_index (torch.Tensor): integer node ids, shape ``[2, E]``.
            num_nodes (int, optional): defaults to ``max id + 1``.
            symmetrize (bool): add the reverse of every edge (default: ``True``).
            remove_self_loops (bool): drop ``v -> v`` edges (default: ``True``).
        """
        num_nodes = _check_edge_index(edge_index, num_nodes, "edge_index")
        rowptr, col = _build_csr((edge_index,), num_nodes, symmetrize, remove_self_loops,
                                 validate=False)
        return cls(rowptr=rowptr, col=col, num_nodes=num_nodes)

    @classmethod
    def from_edge_chunks(cls, chunks: Iterable[torch.Tensor], num_nodes: int,
                         symmetrize: bool = True, remove_self_loops: bool = True
                         ) -> "CSRGraph":
        r"""Build from an edge list given in pieces, without ever holding it whole.

        The result equals :meth:`from_edge_index` on the concatenated chunks, on the host
        whatever the chunks' device (:meth:`to` moves it). ``chunks`` is read twice (degrees,
        then placement), so it must start over on every iteration: a list, or an object
        whose ``__iter__`` yields the chunks anew, not a generator.

        Memory beyond the output (``rowptr``, and ``col`` at 4 bytes per directed edge with
        int32 ids): one int64 cursor per node, temporaries of about 50 bytes for each of
        ``2**20`` directed edges, and, until the end, 4 bytes per duplicate that
        deduplication removes.

        Args:
            chunks (Iterable[torch.Tensor]): integer node ids, shape ``[2, e]`` each (any
                ``e``, any integer dtype).
            num_nodes (int): number of nodes.
            symmetrize (bool): add the reverse of every edge (default: ``True``).
            remove_self_loops (bool): drop ``v -> v`` edges (default: ``True``).
        """
        if isinstance(chunks, (torch.Tensor, Iterator)):
            raise TypeError(f"chunks must be re-iterable (a list, or an object whose __iter__ "
                            f"starts over), got {type(chunks).__name__}; use from_edge_index "
                            f"for one [2, E] tensor")
        if not isinstance(num_nodes, int) or num_nodes < 0:
            raise ValueError(f"num_nodes must be an int >= 0, got {num_nodes!r}")
        rowptr, col = _build_csr(chunks, num_nodes, symmetrize, remove_self_loops,
                                 validate=True)
        return cls(rowptr=rowptr, col=col, num_nodes=num_nodes)

    @classmethod
    def from_upper_keys(cls, keys: torch.Tensor, num_nodes: int) -> "CSRGraph":
        r"""Build the symmetric graph of undirected edges given as sorted, unique keys
        ``a * num_nodes + b`` with ``a <= b`` (``a == b``: a self-loop, stored once).

        How a generator that already produces deduplicated keys hands them over: decoded
        step by step into :meth:`from_edge_chunks`, whose rows then arrive sorted and skip
        its sort.

        Args:
            keys (torch.Tensor): int64, sorted ascending, unique, shape ``[E]``.
            num_nodes (int): number of nodes.
        """
        if keys.dtype != torch.long or keys.dim() != 1:
            raise ValueError(f"keys must be a 1-D int64 tensor, got {keys.dtype} "
                             f"{list(keys.shape)}")
        n = max(num_nodes, 1)
        for s in range(0, keys.numel(), _STEP):
            k = keys[s:s + _STEP + 1]  # one key of overlap: order across steps
            if not bool((k[1:] > k[:-1]).all()):
                raise ValueError("keys must be sorted ascending and unique")
        if keys.numel() and (int(keys[0]) < 0 or int(keys[-1]) >= n * n):
            raise ValueError(f"keys must lie in [0, num_nodes**2 = {n * n}), got "
                             f"[{int(keys[0])}, {int(keys[-1])}]")
        for s in range(0, keys.numel(), _STEP):
            k = keys[s:s + _STEP]
            a = k // n
            if bool((a > k - a * n).any()):
                raise ValueError("keys must encode a <= b (one key per undirected edge)")
        rowptr, col = _build_csr(_UpperKeyEdges(keys, num_nodes), num_nodes, symmetrize=True,
                                 remove_self_loops=False, validate=False)
        return cls(rowptr=rowptr, col=col, num_nodes=num_nodes)

    @property
    def num_edges(self) -> int:
        """Number of directed edges stored."""
        return int(self.col.numel())

    @property
    def device(self) -> torch.device:
        return self.col.device

    def degree(self) -> torch.Tensor:
        """Out-degree of every node, int64 ``[num_nodes]``."""
        return self.rowptr[1:] - self.rowptr[:-1]

    def edge_index(self) -> torch.Tensor:
        """COO form, int64 ``[2, num_edges]``, sorted by source."""
        src = torch.repeat_interleave(torch.arange(self.num_nodes, device=self.device),
                                      self.degree())
        return torch.stack([src, self.col.long()])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "CSRGraph":
        return CSRGraph(self.rowptr.to(device, non_blocking=non_blocking),
                        self.col.to(device, non_blocking=non_blocking), self.num_nodes)

    def pin_memory(self) -> "CSRGraph":
        """Page-locked copy for fast asynchronous host-to-GPU transfer."""
        return CSRGraph(self.rowptr.pin_memory(), self.col.pin_memory(), self.num_nodes)

    def memory_bytes(self) -> int:
        """Bytes held by ``rowptr`` and ``col``."""
        return sum(t.numel() * t.element_size() for t in (self.rowptr, self.col))

    def __repr__(self) -> str:
        return (f"CSRGraph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
                f"col={str(self.col.dtype).replace('torch.', '')}, device={self.device}, "
                f"memory={self.memory_bytes() / 2**20:.1f} MiB)")
