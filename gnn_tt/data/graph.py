"""Compressed sparse row (CSR) graph: the one graph container the sampler, the partitioner
and the trainer share."""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Node ids up to this bound fit the int32 column array (half the memory of int64).
_INT32_MAX = 2**31 - 1


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
        r"""Build from a COO ``edge_index`` (row 0 = source, row 1 = destination).

        Args:
            edge_index (torch.Tensor): integer node ids, shape ``[2, E]``.
            num_nodes (int, optional): defaults to ``max id + 1``.
            symmetrize (bool): add the reverse of every edge (default: ``True``).
            remove_self_loops (bool): drop ``v -> v`` edges (default: ``True``).
        """
        num_nodes = _check_edge_index(edge_index, num_nodes, "edge_index")
        src, dst = edge_index[0].long(), edge_index[1].long()
        if symmetrize:
            # Sort E undirected keys (min, max) rather than 2E directed ones: half the work.
            lo, hi = torch.minimum(src, dst), torch.maximum(src, dst)
            del src, dst
            if remove_self_loops:
                keep = lo != hi
                lo, hi = lo[keep], hi[keep]
            return cls.from_upper_keys(torch.unique(lo * max(num_nodes, 1) + hi), num_nodes)
        if remove_self_loops:
            keep = src != dst
            src, dst = src[keep], dst[keep]
        # One int64 key per edge: sort + unique gives CSR order and drops duplicates at once.
        key = torch.unique(src * max(num_nodes, 1) + dst)  # sorted
        src, dst = key // max(num_nodes, 1), key % max(num_nodes, 1)
        del key
        counts = torch.bincount(src, minlength=num_nodes)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=rowptr[1:])
        col_dtype = torch.int32 if num_nodes <= _INT32_MAX else torch.long
        return cls(rowptr=rowptr, col=dst.to(col_dtype), num_nodes=num_nodes)

    @classmethod
    def from_upper_keys(cls, keys: torch.Tensor, num_nodes: int) -> "CSRGraph":
        r"""Build the symmetric graph of undirected edges given as sorted, unique keys
        ``a * num_nodes + b`` with ``a <= b`` (``a == b``: a self-loop, stored once).

        The fast path of :meth:`from_edge_index` with ``symmetrize=True``, and the way a
        generator that already produces deduplicated keys skips a second sort.

        Args:
            keys (torch.Tensor): int64, sorted ascending, unique, shape ``[E]``.
            num_nodes (int): number of nodes.
        """
        if keys.dtype != torch.long or keys.dim() != 1:
            raise ValueError(f"keys must be a 1-D int64 tensor, got {keys.dtype} "
                             f"{list(keys.shape)}")
        n = max(num_nodes, 1)
        if keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()):
            raise ValueError("keys must be sorted ascending and unique")
        if keys.numel() and (int(keys[0]) < 0 or int(keys[-1]) >= n * n):
            raise ValueError(f"keys must lie in [0, num_nodes**2 = {n * n}), got "
                             f"[{int(keys[0])}, {int(keys[-1])}]")
        id_dtype = torch.int32 if num_nodes <= _INT32_MAX else torch.long
        a = keys // n
        b = (keys - a * n).to(id_dtype)  # [E] each, sorted by (a, b)
        a = a.to(id_dtype)
        if a.numel() and bool((a > b).any()):
            raise ValueError("keys must encode a <= b (one key per undirected edge)")
        # Row v lists its smaller neighbours (keys (a, v), a < v) then its larger ones and
        # itself (keys (v, b), b >= v): each part is sorted, so the row is. The keys are
        # sorted by a, so a stable sort by b orders the first part within each row.
        proper = a != b
        low_src, low_dst = b[proper], a[proper]  # edges v <- a with a < v
        order = torch.argsort(low_src, stable=True)
        low_src, low_dst = low_src[order], low_dst[order]
        del order, proper
        n_low = torch.bincount(low_src, minlength=num_nodes)  # [num_nodes]
        n_up = torch.bincount(a, minlength=num_nodes)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        torch.cumsum(n_low + n_up, 0, out=rowptr[1:])
        low_start = torch.cumsum(n_low, 0) - n_low  # exclusive prefix sums
        up_start = torch.cumsum(n_up, 0) - n_up
        col = torch.empty(low_src.numel() + a.numel(), dtype=id_dtype)
        # Entry j of a part sorted by row r lands at rowptr[r] + (j - start[r]) (+ the row's
        # lower part for the upper one); rowptr = low_start + up_start.
        col[torch.arange(low_src.numel()) + up_start[low_src]] = low_dst
        del low_src, low_dst
        col[torch.arange(a.numel()) + (low_start + n_low)[a]] = b
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
