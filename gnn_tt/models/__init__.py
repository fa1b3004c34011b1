"""GNN models over sampled blocks: GAT, GraphSAGE and the classifier that puts an input layer
(:mod:`gnn_tt.embedding`) in front of them."""
from .block_gnn import BlockGNN, full_neighbour_block
from .classifier import NodeClassifier, wrap_ddp
from .gat import GAT
from .sage import GraphSAGE

__all__ = ["BlockGNN", "full_neighbour_block", "GraphSAGE", "GAT", "NodeClassifier",
           "wrap_ddp"]
