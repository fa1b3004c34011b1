"""GNN models over sampled blocks and the input layers that feed them."""
from .block_gnn import BlockGNN, full_neighbour_block
from .classifier import NodeClassifier, wrap_ddp
from .gat import GAT
from .node_input import (FeatureInput, FullNodeEmbedding, NodeInput, TTNodeEmbedding,
                         build_node_input)
from .sage import GraphSAGE

__all__ = ["BlockGNN", "full_neighbour_block", "GraphSAGE", "GAT", "NodeInput",
           "TTNodeEmbedding", "FullNodeEmbedding", "FeatureInput", "build_node_input",
           "NodeClassifier", "wrap_ddp"]
