"""gnn_tt: GNN training with tensor-train compressed node embeddings."""
__version__ = "0.1.0"
