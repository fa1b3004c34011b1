"""GraphSAGE over sampled blocks (Hamilton et al., 2017) with PyG's mean ``SAGEConv``."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv

from .block_gnn import BlockGNN


class GraphSAGE(BlockGNN):
    r"""GraphSAGE from `"Inductive Representation Learning on Large Graphs"
    <https://arxiv.org/abs/1706.02216>`_ with mean aggregation, as in the OGB
    ogbn-products / ogbn-papers100M reference models:

    .. math::
        \mathbf{h}_i^{(l+1)} = \mathbf{W}_1^{(l)} \mathbf{h}_i^{(l)} + \mathbf{W}_2^{(l)}
        \cdot \mathrm{mean}_{j \in \mathcal{N}(i)} \mathbf{h}_j^{(l)}

    followed on every hidden layer by ReLU and dropout. Each layer runs on a bipartite block
    ``(x, x[:num_dst])``.

    Args:
        in_channels (int): input feature size.
        hidden_channels (int): hidden size.
        out_channels (int): number of classes.
        num_layers (int): number of layers (default: ``3``).
        dropout (float): dropout after each hidden layer (default: ``0.5``).

    Shapes:
        - **input:** ``x`` ``[blocks[0].num_src, in_channels]``, ``blocks`` (one per layer)
        - **output:** ``[blocks[-1].num_dst, out_channels]``

    Example::

        >>> model = GraphSAGE(100, 256, 47, num_layers=3)
        >>> logits = model(x, batch.blocks)               # [batch.batch_size, 47]
        >>> all_logits = model.inference(x_all, graph, batch_size=4096)
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 3, dropout: float = 0.5) -> None:
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        sizes = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(SAGEConv(sizes[i], sizes[i + 1], aggr="mean")
                                   for i in range(num_layers))

    def layer(self, i: int, x: Tensor, edge_index: Tensor, num_dst: int) -> Tensor:
        h = self.convs[i]((x, x[:num_dst]), edge_index)                  # [num_dst, C_out]
        if i < self.num_layers - 1:
            h = F.dropout(F.relu(h), p=self.dropout, training=self.training)
        return h
