"""gnn_tt: GNN training with tensor-train compressed node embeddings."""
__version__ = "0.1.0"

from gnn_tt.embedding.tt_embedding import TTEmbedding
from gnn_tt.embedding.tt_shapes import suggest_tt_shapes

__all__ = ["TTEmbedding", "suggest_tt_shapes"]
