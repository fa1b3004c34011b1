"""Uniform multi-hop neighbour sampling without replacement into per-layer bipartite blocks.

Every step is a vectorized torch op (one Python loop over hops and, inside a hop, over the
fanout), so the same code runs on CPU and CUDA tensors.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from gnn_tt.data.graph import CSRGraph

# "Not in this batch" marker of the node -> local id table; local ids are far below it.
_UNSET = 2**31 - 1


@dataclass
class Block:
    r"""One GNN layer's bipartite graph in local ids.

    The destination nodes are the first ``num_dst`` source nodes, so a layer runs as
    ``conv((x, x[:num_dst]), edge_index)``.

    Args:
        edge_index (torch.Tensor): int64 local ids; row 0 = source in ``[0, num_src)``,
            row 1 = destination in ``[0, num_dst)``; grouped by destination.
        num_src (int): number of source nodes.
        num_dst (int): number of destination nodes.

    Shapes:
        - **edge_index:** :math:`(2, E)`
    """

    edge_index: Tensor
    num_src: int
    num_dst: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Block":
        return Block(self.edge_index.to(device, non_blocking=non_blocking),
                     self.num_src, self.num_dst)

    def pin_memory(self) -> "Block":
        return Block(self.edge_index.pin_memory(), self.num_src, self.num_dst)


@dataclass
class MiniBatch:
    r"""The sampled computation graph of one batch of seed nodes.

    Args:
        n_id (torch.Tensor): int64 global ids of ``blocks[0]``'s source nodes, seeds first;
            the sources of every block are a prefix of it.
        blocks (list[Block]): one block per layer in the order the layers consume them:
            ``blocks[0]`` is the outermost hop, ``blocks[-1].num_dst == batch_size``, and
            ``blocks[i].num_dst == blocks[i + 1].num_src``.
        batch_size (int): number of seeds; ``seeds = n_id[:batch_size]``.

    Shapes:
        - **n_id:** :math:`(N_{input},)`
    """

    n_id: Tensor
    blocks: list[Block]
    batch_size: int

    @property
    def num_sampled_edges(self) -> int:
        """Edges over all blocks."""
        return sum(int(b.edge_index.size(1)) for b in self.blocks)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "MiniBatch":
        return MiniBatch(self.n_id.to(device, non_blocking=non_blocking),
                         [b.to(device, non_blocking) for b in self.blocks], self.batch_size)

    def pin_memory(self) -> "MiniBatch":
        """Page-locked copy, so ``.to("cuda", non_blocking=True)`` overlaps with compute."""
        return MiniBatch(self.n_id.pin_memory(), [b.pin_memory() for b in self.blocks],
                         self.batch_size)


def _check_fanouts(fanouts: Sequence[int]) -> list[int]:
    if isinstance(fanouts, (str, bytes)) or not isinstance(fanouts, Sequence):
        raise TypeError(f"'NeighborSampler': fanouts must be a sequence of ints, "
                        f"got {fanouts!r}")
    fanouts = list(fanouts)
    if not fanouts:
        raise ValueError("'NeighborSampler': fanouts must hold at least one hop, got []")
    for f in fanouts:
        if isinstance(f, bool) or not isinstance(f, int) or (f < 1 and f != -1):
            raise ValueError(f"'NeighborSampler': fanouts must be ints >= 1 or -1 "
                             f"(all neighbours), got {fanouts}")
    return fanouts


class NeighborSampler:
    r"""Uniform neighbour sampling without replacement (GraphSAGE), hop by hop.

    Hop ``h`` draws, for every destination node ``v``, ``min(deg(v), fanouts[h])`` distinct
    neighbours uniformly at random (all of them for ``-1``); the sampled neighbours that are
    new join the destination nodes to form the next hop's destinations. ``fanouts[0]`` is the
    hop out from the seeds (PyG's convention), so ``blocks[-1]`` uses ``fanouts[0]``.

    Nodes with more neighbours than the fanout draw their subset with Floyd's algorithm,
    vectorized over nodes (a loop over the ``fanout`` draws), with float64 uniforms so no
    degree up to :math:`2^{31}` is skewed; the cost is :math:`O(\text{fanout}^2)` per node
    and never touches the other edges of high-degree nodes. Relabelling to local ids uses a
    node-sized table kept by the sampler (reset after each batch only where it was written),
    so one sampler must not run :meth:`sample` from two threads at once (a lock enforces it).

    Args:
        graph (CSRGraph): the graph, on the device sampling should run on.
        fanouts (Sequence[int]): neighbours per node per hop, ``-1`` for all.

    Example::

        sampler = NeighborSampler(graph, [15, 10, 5])
        batch = sampler.sample(torch.tensor([0, 5, 7]), torch.Generator().manual_seed(0))
        h = x[batch.n_id]
        for conv, block in zip(convs, batch.blocks):
            h = conv((h, h[:block.num_dst]), block.edge_index)
    """

    def __init__(self, graph: CSRGraph, fanouts: Sequence[int]):
        if not isinstance(graph, CSRGraph):
            raise TypeError(f"'NeighborSampler': graph must be a CSRGraph, "
                            f"got {type(graph).__name__}")
        self.graph = graph
        self.fanouts = _check_fanouts(fanouts)
        # Global id -> local id of the batch being sampled, _UNSET elsewhere. int32 halves
        # its footprint (local ids stay far below 2^31).
        self._local = torch.full((graph.num_nodes,), _UNSET, dtype=torch.int32,
                                 device=graph.device)
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self.graph.device

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_nodes={self.graph.num_nodes}, "
                f"fanouts={self.fanouts}, device={self.device})")

    def _check_seeds(self, seeds: Tensor) -> Tensor:
        name = self.__class__.__name__
        if not isinstance(seeds, Tensor):
            raise TypeError(f"'{name}': seeds must be a torch.Tensor, got {type(seeds).__name__}")
        if seeds.dim() != 1:
            raise ValueError(f"'{name}': seeds must be 1-D, got shape {list(seeds.shape)}")
        if seeds.dtype.is_floating_point or seeds.dtype.is_complex or seeds.dtype == torch.bool:
            raise TypeError(f"'{name}': seeds must hold integer node ids, got dtype {seeds.dtype}")
        seeds = seeds.to(self.device, torch.long)
        if seeds.numel():
            lo, hi = torch.stack(torch.aminmax(seeds)).tolist()  # one host sync for both
            if lo < 0 or hi >= self.graph.num_nodes:
                raise ValueError(f"'{name}': seeds must lie in [0, num_nodes="
                                 f"{self.graph.num_nodes}), got ids in [{lo}, {hi}]")
        return seeds

    def sample(self, seeds: Tensor, generator: torch.Generator | None = None) -> MiniBatch:
        r"""Sample the blocks of one batch.

        Args:
            seeds (torch.Tensor): distinct integer node ids, any device (moved to the
                graph's).
            generator (torch.Generator, optional): source of randomness, on the graph's
                device; the same generator state gives the same batch (default: torch's
                global generator).

        Shapes:
            - **seeds:** :math:`(B,)`
        """
        seeds = self._check_seeds(seeds)
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(f"'{self.__class__.__name__}': generator is on {generator.device}, "
                             f"the graph on {self.device}; they must match")
        return self._locked_sample(seeds, generator, check_distinct=True)

    def sample_trusted(self, seeds: Tensor, generator: torch.Generator | None = None
                       ) -> MiniBatch:
        r""":meth:`sample` without its checks, for a caller that validated its seeds once up
        front (:class:`~gnn_tt.sampling.loader.NeighborLoader` does, at construction): it
        saves the two host syncs per batch of the range and distinctness checks.

        Args:
            seeds (torch.Tensor): distinct int64 node ids in ``[0, num_nodes)`` on the
                graph's device; anything else is undefined behaviour.
            generator (torch.Generator, optional): on the graph's device.
        """
        return self._locked_sample(seeds, generator, check_distinct=False)

    def _locked_sample(self, seeds: Tensor, generator: torch.Generator | None,
                       check_distinct: bool) -> MiniBatch:
        with self._lock:
            try:
                return self._sample(seeds, generator, check_distinct)
            except BaseException:
                self._local.fill_(_UNSET)  # leave a clean table behind an error
                raise

    def _sample(self, seeds: Tensor, generator: torch.Generator | None,
                check_distinct: bool) -> MiniBatch:
        local = self._local
        n = seeds.numel()
        # Local ids of the seeds; a duplicate seed would leave one of its slots overwritten.
        arange_n = torch.arange(n, dtype=torch.int32, device=self.device)
        local.scatter_(0, seeds, arange_n)
        if check_distinct and n and not bool((local.index_select(0, seeds) == arange_n).all()):
            raise ValueError(f"'{self.__class__.__name__}': seeds must be distinct node ids, "
                             f"got duplicates")
        n_id = seeds
        blocks = []
        for fanout in self.fanouts:
            # The destinations of this hop are all nodes reached so far: n_id[:n_dst].
            n_dst = n_id.numel()
            edge_index = self._sample_neighbors(n_id, fanout, generator)  # [2, E]
            nbr = edge_index[0]                                            # [E] global ids
            new = self._relabel(nbr, n_dst)                    # [n_new] global, first seen
            n_id = torch.cat([n_id, new])
            nbr.copy_(local.index_select(0, nbr))  # global -> local ids, in place
            blocks.append(Block(edge_index, num_src=n_id.numel(), num_dst=n_dst))
        local.index_fill_(0, n_id, _UNSET)  # reset only what this batch wrote
        blocks.reverse()  # the first layer consumes the outermost hop
        return MiniBatch(n_id=n_id, blocks=blocks, batch_size=n)

    def _sample_neighbors(self, nodes: Tensor, fanout: int,
                          generator: torch.Generator | None) -> Tensor:
        """int64 ``[2, E]``: row 0 the sampled neighbours' global ids, row 1 their
        destinations' positions in ``nodes``; each destination's edges are contiguous."""
        # index_select rather than tensor[index] throughout: several times faster on CPU.
        rowptr, col = self.graph.rowptr, self.graph.col
        start = rowptr.index_select(0, nodes)                  # [n]
        deg = rowptr[1:].index_select(0, nodes) - start        # [n]
        # Rows with more neighbours than the fanout draw a subset; the others keep all.
        if fanout == -1:
            big, small = nodes.new_empty(0), torch.arange(nodes.numel(), device=self.device)
        else:
            is_big = deg > fanout
            big, small = is_big.nonzero().squeeze(1), (~is_big).nonzero().squeeze(1)
        pos_small, row_small = self._all_edges(start.index_select(0, small),
                                               deg.index_select(0, small))
        num_big = big.numel() * max(fanout, 0)
        out = torch.empty(2, num_big + pos_small.numel(), dtype=torch.long,
                          device=self.device)
        if num_big:
            offs = self._floyd(deg.index_select(0, big), fanout, generator)  # [k, n_big]
            # Node-major [n_big, k]: the add writes the transpose in one pass.
            pos_big = torch.empty(big.numel(), fanout, dtype=torch.long, device=self.device)
            torch.add(offs.t(), start.index_select(0, big).unsqueeze(1), out=pos_big)
            pos_big = pos_big.view(-1)
            out[0, :num_big].copy_(col.index_select(0, pos_big))
            out[1, :num_big].view(-1, fanout).copy_(big.unsqueeze(1))
        out[0, num_big:].copy_(col.index_select(0, pos_small))
        out[1, num_big:].copy_(small.index_select(0, row_small))
        return out

    @staticmethod
    def _all_edges(start: Tensor, deg: Tensor) -> tuple[Tensor, Tensor]:
        """Every edge of the rows ``[start, start + deg)``: positions in ``col`` and the row
        of each (int64 [E] both)."""
        row = torch.repeat_interleave(torch.arange(deg.numel(), device=deg.device), deg)
        first = torch.cumsum(deg, 0) - deg                     # [n] row's first edge in E
        pos = (start - first).index_select(0, row) + torch.arange(row.numel(),
                                                                  device=deg.device)
        return pos, row

    def _floyd(self, deg: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        r"""A uniform ``k``-subset of ``[0, deg)`` per node (Floyd's algorithm), int64
        ``[k, n]``; meaningful only where ``deg > k``.

        Draw ``c`` picks ``t`` uniform in ``[0, deg - k + c]`` and keeps it unless an
        earlier draw took it, then it takes ``deg - k + c`` (never drawn before): every
        subset comes out with probability ``1 / C(deg, k)``. Cost :math:`O(k^2)` per node.
        """
        last = deg - k                                         # [n] draw c picks from [0, last + c]
        # float64: 53-bit uniforms keep floor(u * bound) unbiased for any int32 degree.
        u = torch.rand(k, deg.numel(), dtype=torch.float64, device=self.device,
                       generator=generator)
        draws = torch.arange(1, k + 1, device=self.device).unsqueeze(1)
        out = u.mul_(last + draws).long()                      # [k, n] the raw draws t
        for c in range(1, k):
            taken = out[0] == out[c]
            for j in range(1, c):
                taken |= out[j] == out[c]
            torch.where(taken, last + c, out[c], out=out[c])
        return out

    def _relabel(self, nbr: Tensor, n_known: int) -> Tensor:
        """Give the nodes of ``nbr`` not yet in the batch the local ids ``n_known, ...`` in
        order of first occurrence; returns their global ids (int64 [n_new])."""
        local = self._local
        e = nbr.numel()
        if n_known + e >= _UNSET:
            raise RuntimeError(f"'{self.__class__.__name__}': a hop sampled {e} edges, too "
                               f"many for int32 local ids; use smaller batches or fanouts")
        # Known nodes hold ids < n_known; each new node gets n_known + its first position
        # (amin is order independent, so the result is deterministic on every device).
        first = torch.arange(n_known, n_known + e, dtype=torch.int32, device=self.device)
        local.scatter_reduce_(0, nbr, first, reduce="amin")
        new = nbr.masked_select(local.index_select(0, nbr) == first)
        local.scatter_(0, new, torch.arange(n_known, n_known + new.numel(),
                                            dtype=torch.int32, device=self.device))
        return new
