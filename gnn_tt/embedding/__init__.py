"""The TT embedding: the shape policy, the ``nn.Module`` over the lookup kernels (:mod:`kernels`)
and the input layers a GNN reads node vectors from (TT, full table, features, and a table
beside the features)."""
from gnn_tt.embedding.node_input import (ConcatInput, FeatureInput, FullNodeEmbedding,
                                         NodeInput, TTNodeEmbedding, build_node_input)
from gnn_tt.embedding.tt_embedding import TTEmbedding
from gnn_tt.embedding.tt_shapes import suggest_tt_shapes

__all__ = ["ConcatInput", "FeatureInput", "FullNodeEmbedding", "NodeInput", "TTEmbedding",
           "TTNodeEmbedding", "build_node_input", "suggest_tt_shapes"]
