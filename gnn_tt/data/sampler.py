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
        raise TypeError(f"fanouts must be a sequence of ints, got {fanouts!r}")
    fanouts = list(fanouts)
    if not fanouts:
        raise ValueError("fanouts must hold at least one hop, got []")
    for f in fanouts:
        if isinstance(f, bool) or not isinstance(f, int) or (f < 1 and f != -1):
            raise ValueError(f"fanouts must be ints >= 1 or -1 (all neighbours), got {fanouts}")
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
            raise TypeError(f"graph must be a CSRGraph, got {type(graph).__name__}")
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
        if not isinstance(seeds, Tensor):
            raise TypeError(f"seeds must be a torch.Tensor, got {type(seeds).__name__}")
        if seeds.dim() != 1:
            raise ValueError(f"seeds must be 1-D, got shape {list(seeds.shape)}")
        if seeds.dtype.is_floating_point or seeds.dtype.is_complex or seeds.dtype == torch.bool:
            raise TypeError(f"seeds must hold integer node ids, got dtype {seeds.dtype}")
        seeds = seeds.to(self.device, torch.long)
        if seeds.numel():
            lo, hi = torch.aminmax(seeds)
            lo, hi = int(lo), int(hi)  # one host sync for both bounds
            if lo < 0 or hi >= self.graph.num_nodes:
                raise ValueError(f"seeds must lie in [0, num_nodes={self.graph.num_nodes}), "
                                 f"got ids in [{lo}, {hi}]")
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
            raise ValueError(f"generator is on {generator.device}, the graph on {self.device}; "
                             f"they must match")
        with self._lock:
            try:
                return self._sample(seeds, generator)
            except BaseException:
                self._local.fill_(_UNSET)  # leave a clean table behind an error
                raise

    def _sample(self, seeds: Tensor, generator: torch.Generator | None) -> MiniBatch:
        local = self._local
        n = seeds.numel()
        # Local ids of the seeds; a duplicate seed would leave one of its slots overwritten.
        arange_n = torch.arange(n, dtype=torch.int32, device=self.device)
        local.index_put_((seeds,), arange_n)
        if n and not bool((local.index_select(0, seeds) == arange_n).all()):
            raise ValueError("seeds must be distinct node ids, got duplicates")
        n_id = seeds
        blocks = []
        for fanout in self.fanouts:
            # The destinations of this hop are all nodes reached so far: n_id[:n_dst].
            n_dst = n_id.numel()
            nbr, dst = self._sample_neighbors(n_id, fanout, generator)  # [E] global, [E] local
            new = self._relabel(nbr, n_dst)                             # [n_new] global, first seen
            n_id = torch.cat([n_id, new])
            src = local.index_select(0, nbr).long()
            blocks.append(Block(torch.stack([src, dst]), num_src=n_id.numel(), num_dst=n_dst))
        local.index_fill_(0, n_id, _UNSET)  # reset only what this batch wrote
        blocks.reverse()  # the first layer consumes the outermost hop
        return MiniBatch(n_id=n_id, blocks=blocks, batch_size=n)

    def _sample_neighbors(self, nodes: Tensor, fanout: int,
                          generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Sampled neighbours (global ids, int64 [E]) and their destinations' positions in
        ``nodes`` (int64 [E]), grouped by destination."""
        # index_select rather than tensor[index]: several times faster on CPU.
        rowptr, col = self.graph.rowptr, self.graph.col
        start = rowptr.index_select(0, nodes)                  # [n]
        deg = rowptr.index_select(0, nodes + 1) - start        # [n]
        n = nodes.numel()
        arange_n = torch.arange(n, device=self.device)
        if fanout == -1:
            # Every edge: positions start[v] + 0..deg[v]-1 for each v.
            dst = torch.repeat_interleave(arange_n, deg)
            offset = torch.cumsum(deg, 0) - deg
            pos = (start - offset).index_select(0, dst) + torch.arange(dst.numel(),
                                                                      device=self.device)
            return col.index_select(0, pos).long(), dst
        # [fanout, n] offsets inside each neighbour list (node-minor so each draw is a
        # contiguous row): a Floyd sample where deg > fanout, else 0..fanout-1 of which the
        # first deg are kept.
        arange_k = torch.arange(fanout, device=self.device).unsqueeze(1)     # [k, 1]
        offs = torch.where(deg <= fanout, arange_k, self._floyd(deg, fanout, generator))
        keep = arange_k < deg                                                # [k, n]
        # Transposed views: masked_select walks them node-major, grouping edges by node.
        pos = (offs + start).t().masked_select(keep.t())
        dst = torch.repeat_interleave(arange_n, deg.clamp(max=fanout))
        return col.index_select(0, pos).long(), dst

    def _floyd(self, deg: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        r"""A uniform ``k``-subset of ``[0, deg)`` per node (Floyd's algorithm), int64
        ``[k, n]``; meaningful only where ``deg > k``.

        Draw ``c`` picks ``t`` uniform in ``[0, deg - k + c]`` and keeps it unless an
        earlier draw took it, then it takes ``deg - k + c`` (never drawn before): every
        subset comes out with probability ``1 / C(deg, k)``. Cost :math:`O(k^2)` per node.
        """
        # float64: 53-bit uniforms keep floor(u * bound) unbiased for any int32 degree.
        u = torch.rand(k, deg.numel(), dtype=torch.float64, device=self.device,
                       generator=generator)
        out = torch.empty(k, deg.numel(), dtype=torch.long, device=self.device)
        for c in range(k):
            bound = deg - (k - c)                   # [n] draw c picks from [0, bound]
            t = u[c].mul_(bound + 1).long()
            if c:
                t = torch.where((out[:c] == t).any(0), bound, t)
            out[c] = t
        return out

    def _relabel(self, nbr: Tensor, n_known: int) -> Tensor:
        """Give the nodes of ``nbr`` not yet in the batch the local ids ``n_known, ...`` in
        order of first occurrence; returns their global ids (int64 [n_new])."""
        local = self._local
        e = nbr.numel()
        if n_known + e >= _UNSET:
            raise RuntimeError(f"{self.__class__.__name__}: a hop sampled {e} edges, too "
                               f"many for int32 local ids; use smaller batches or fanouts")
        # Known nodes hold ids < n_known; each new node gets n_known + its first position
        # (amin is order independent, so the result is deterministic on every device).
        first = torch.arange(n_known, n_known + e, dtype=torch.int32, device=self.device)
        local.scatter_reduce_(0, nbr, first, reduce="amin")
        new = nbr.masked_select(local.index_select(0, nbr) == first)
        local.index_put_((new,), torch.arange(n_known, n_known + new.numel(),
                                              dtype=torch.int32, device=self.device))
        return new
