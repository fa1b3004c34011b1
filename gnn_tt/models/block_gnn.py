"""Shared skeleton of the GNNs that run over sampled blocks: the layer loop of the mini-batch
forward and the layer-wise full-neighbour inference over all nodes. GraphSAGE and GAT only
define their layers."""
from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from gnn_tt.common.checks import check_positive_int
from gnn_tt.data.graph import CSRGraph
from gnn_tt.sampling.sampler import Block


def full_neighbour_block(graph: CSRGraph, start: int, end: int) -> tuple[Tensor, Tensor]:
    r"""The bipartite block of the destination nodes ``start..end-1`` with all their
    neighbours: node ``v`` aggregates from ``graph.col[rowptr[v]:rowptr[v+1]]`` (the sampler's
    convention).

    Args:
        graph (CSRGraph): the graph (any device).
        start (int): first destination node.
        end (int): one past the last destination node.

    Returns:
        ``(n_id, edge_index)``: ``n_id`` int64 ``[num_src]`` global ids of the block's sources,
        the destinations ``start..end-1`` first (so ``x[:end - start]`` are the destination
        features), then the other neighbours in ascending order; ``edge_index`` int64
        ``[2, E]`` local ids, row 0 source, row 1 destination.
    """
    device = graph.device
    num_dst = end - start
    lo, hi = int(graph.rowptr[start]), int(graph.rowptr[end])
    nbr = graph.col[lo:hi].long()                                          # [E] global
    dst = torch.repeat_interleave(torch.arange(num_dst, device=device),
                                  graph.rowptr[start + 1:end + 1] - graph.rowptr[start:end])
    # Destinations are a contiguous id range, so their local id is an offset; only the
    # neighbours outside the range need a relabelling (unique sorts them: deterministic).
    inside = (nbr >= start) & (nbr < end)
    outside_ids, outside_local = torch.unique(nbr[~inside], return_inverse=True)
    src = torch.empty_like(nbr)
    src[inside] = nbr[inside] - start
    src[~inside] = outside_local + num_dst
    n_id = torch.cat([torch.arange(start, end, device=device), outside_ids])
    return n_id, torch.stack([src, dst])


class BlockGNN(nn.Module, ABC):
    r"""Base class of a stack of ``num_layers`` bipartite message-passing layers.

    A subclass builds its layers and implements :meth:`layer`; this class runs them over the
    sampled blocks of a mini-batch (:meth:`forward`) or layer by layer over every node with
    full neighbourhoods (:meth:`inference`), so both paths share one definition of a layer.

    Args:
        in_channels (int): input feature size.
        hidden_channels (int): hidden size (per head for attention models).
        out_channels (int): output size (number of classes).
        num_layers (int): number of message-passing layers (default: ``3``).
        dropout (float): dropout probability after each hidden layer (default: ``0.5``).
    """

    # Constructor arguments shown by __repr__ after num_layers (subclasses extend).
    _repr_attrs: tuple[str, ...] = ()

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        name = self.__class__.__name__
        for arg, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                           ("out_channels", out_channels), ("num_layers", num_layers)):
            check_positive_int(arg, value, name)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"'{name}' needs dropout in [0, 1), got {dropout!r}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.dropout = dropout

    @abstractmethod
    def layer(self, i: int, x: Tensor, edge_index: Tensor, num_dst: int) -> Tensor:
        r"""Layer ``i`` (conv and, on hidden layers, what follows it) on one bipartite block.

        Args:
            i (int): layer number, ``0 <= i < num_layers``.
            x (Tensor): source features, destinations first, ``[num_src, C_in]``.
            edge_index (Tensor): local ids, row 0 source, row 1 destination, ``[2, E]``.
            num_dst (int): number of destination nodes.

        Returns:
            Tensor ``[num_dst, C_out]``.
        """

    def forward(self, x: Tensor, blocks: Sequence[Block]) -> Tensor:
        r"""Run the layers over a mini-batch's sampled blocks.

        Args:
            x (Tensor): input features of ``blocks[0]``'s sources.
            blocks (list[Block]): one per layer, ``blocks[0]`` the first (outermost hop);
                destination nodes are the first ``num_dst`` sources of each block.

        Shapes:
            - **input:** ``x`` ``[blocks[0].num_src, in_channels]``
            - **output:** ``[blocks[-1].num_dst, out_channels]`` (the seeds)
        """
        name = self.__class__.__name__
        if len(blocks) != self.num_layers:
            raise ValueError(f"'{name}' has num_layers={self.num_layers} but got "
                             f"{len(blocks)} blocks (fanouts must have one entry per layer)")
        if x.dim() != 2 or x.size(0) != blocks[0].num_src or x.size(1) != self.in_channels:
            raise ValueError(f"'{name}' expects x of shape [{blocks[0].num_src}, "
                             f"{self.in_channels}] (blocks[0].num_src, in_channels), got "
                             f"{list(x.shape)}")
        for i, block in enumerate(blocks):
            if i and block.num_src != blocks[i - 1].num_dst:
                raise ValueError(f"'{name}': blocks[{i}].num_src={block.num_src} differs from "
                                 f"blocks[{i - 1}].num_dst={blocks[i - 1].num_dst}")
            x = self.layer(i, x, block.edge_index, block.num_dst)
        return x

    @torch.no_grad()
    def inference(self, x_all: Tensor, graph: CSRGraph, batch_size: int,
                  device: torch.device | str | None = None, progress: bool = False) -> Tensor:
        r"""Exact full-neighbour outputs of every node, computed layer by layer: each layer
        runs over all nodes in batches of ``batch_size`` destinations before the next, so the
        cost is linear in the number of edges (no neighbourhood explosion). Runs in eval mode
        (dropout off, batch norm with its running statistics) and restores the mode after.

        Args:
            x_all (Tensor): input features of all nodes; each layer's output is kept on the
                same device (e.g. host memory for a big graph).
            graph (CSRGraph): the graph; node ``v`` aggregates from its CSR neighbours.
            batch_size (int): destination nodes per step.
            device (torch.device or str, optional): where the layers run (default: the
                device of the model's parameters).
            progress (bool): show a tqdm bar when stderr is a terminal (default: ``False``).

        Shapes:
            - **input:** ``x_all`` ``[graph.num_nodes, in_channels]``
            - **output:** ``[graph.num_nodes, out_channels]`` on ``x_all.device``
        """
        name = self.__class__.__name__
        if x_all.dim() != 2 or x_all.size(0) != graph.num_nodes \
                or x_all.size(1) != self.in_channels:
            raise ValueError(f"'{name}' expects x_all of shape [{graph.num_nodes}, "
                             f"{self.in_channels}] (graph.num_nodes, in_channels), got "
                             f"{list(x_all.shape)}")
        check_positive_int("batch_size", batch_size, name)
        if graph.num_nodes == 0:
            raise ValueError(f"'{name}' cannot run inference on an empty graph (num_nodes=0)")
        if device is None:
            device = next(self.parameters()).device
        starts = range(0, graph.num_nodes, batch_size)
        was_training = self.training
        self.eval()
        try:
            bar = tqdm(total=self.num_layers * len(starts), desc=f"{name} inference",
                       disable=not (progress and sys.stderr.isatty()))
            for i in range(self.num_layers):
                out = None
                for start in starts:
                    end = min(start + batch_size, graph.num_nodes)
                    n_id, edge_index = full_neighbour_block(graph, start, end)
                    x = x_all[n_id.to(x_all.device)].to(device, non_blocking=True)
                    h = self.layer(i, x, edge_index.to(device), end - start)  # [end-start, C]
                    if out is None:  # the layer's width is known after its first batch
                        out = torch.empty(graph.num_nodes, h.size(1), dtype=h.dtype,
                                          device=x_all.device)
                    out[start:end] = h.to(x_all.device)
                    bar.update()
                x_all = out
            bar.close()
        finally:
            self.train(was_training)
        return x_all

    def reset_parameters(self) -> None:
        """Re-initialize every learnable submodule (each once: a module that resets itself
        also resets its children)."""
        def reset(module: nn.Module) -> None:
            for child in module.children():
                if hasattr(child, "reset_parameters"):
                    child.reset_parameters()
                else:
                    reset(child)
        reset(self)

    def __repr__(self) -> str:
        extra = "".join(f", {a}={getattr(self, a)}" for a in self._repr_attrs)
        return (f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, "
                f"{self.out_channels}, num_layers={self.num_layers}{extra})")
