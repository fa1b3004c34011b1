"""Multi-head GAT over sampled blocks with PyG's ``GATConv``, in the style of the strong
ogbn-products GAT recipes: a residual linear map of the destination features, batch or layer
norm, ELU and dropout after every hidden layer, heads concatenated on hidden layers and
averaged on the last."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv

from gnn_tt.common.checks import check_positive_int
from .block_gnn import BlockGNN

NORMS = ("batch", "layer", "none")


class GAT(BlockGNN):
    r"""Graph attention network from `"Graph Attention Networks"
    <https://arxiv.org/abs/1710.10903>`_ over bipartite blocks ``(x, x[:num_dst])``.
    Layer ``l`` computes, with ``H`` heads,

    .. math::
        \mathbf{h}_i^{(l+1)} = \mathrm{Dropout}\Big(\mathrm{ELU}\Big(\mathrm{Norm}\Big(
        \Big\Vert_{k=1}^{H} \sum_{j \in \mathcal{N}(i) \cup \{i\}} \alpha_{ij}^{k}
        \mathbf{\Theta}^{k} \mathbf{h}_j^{(l)} + \mathbf{W}_{\mathrm{res}} \mathbf{h}_i^{(l)}
        \Big)\Big)\Big)

    on hidden layers (heads concatenated: width ``heads * hidden_channels``); the last layer
    averages its heads and adds its residual, without norm, activation or dropout.

    Args:
        in_channels (int): input feature size.
        hidden_channels (int): hidden size per head.
        out_channels (int): number of classes.
        num_layers (int): number of layers (default: ``3``).
        heads (int): attention heads per layer (default: ``4``).
        dropout (float): dropout after each hidden layer (default: ``0.5``).
        attn_dropout (float): dropout on the attention coefficients (default: ``0.0``).
        residual (bool): add a linear map of the destination's own input to each layer's
            output (default: ``True``).
        norm (str): ``"batch"``, ``"layer"`` or ``"none"``: normalization of each hidden
            layer's output before ELU (default: ``"batch"``).

    Shapes:
        - **input:** ``x`` ``[blocks[0].num_src, in_channels]``, ``blocks`` (one per layer)
        - **output:** ``[blocks[-1].num_dst, out_channels]``

    Example::

        >>> model = GAT(100, 256, 47, num_layers=3, heads=4)
        >>> logits = model(x, batch.blocks)               # [batch.batch_size, 47]
    """

    _repr_attrs = ("heads",)

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 3, heads: int = 4, dropout: float = 0.5,
                 attn_dropout: float = 0.0, residual: bool = True, norm: str = "batch") -> None:
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        check_positive_int("heads", heads, self.__class__.__name__)
        if not 0.0 <= attn_dropout < 1.0:
            raise ValueError(f"'{self.__class__.__name__}' needs attn_dropout in [0, 1), "
                             f"got {attn_dropout!r}")
        if norm not in NORMS:
            raise ValueError(f"'{self.__class__.__name__}' does not support norm={norm!r} "
                             f"(valid: {', '.join(NORMS)})")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.residual = residual
        self.norm = norm
        width = heads * hidden_channels  # hidden layers concatenate their heads
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(num_layers):
            last = i == num_layers - 1
            self.convs.append(GATConv(in_channels if i == 0 else width,
                                      out_channels if last else hidden_channels, heads=heads,
                                      concat=not last, dropout=attn_dropout, residual=residual))
            if not last:
                self.norms.append(nn.BatchNorm1d(width) if norm == "batch"
                                  else nn.LayerNorm(width) if norm == "layer" else nn.Identity())

    def layer(self, i: int, x: Tensor, edge_index: Tensor, num_dst: int) -> Tensor:
        # GATConv adds each destination's self-loop (local id i on both sides: destinations
        # are the first sources) and, with residual=True, res(x[:num_dst]).
        h = self.convs[i]((x, x[:num_dst]), edge_index)                  # [num_dst, C_out]
        if i < self.num_layers - 1:
            h = F.dropout(F.elu(self.norms[i](h)), p=self.dropout, training=self.training)
        return h
