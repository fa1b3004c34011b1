"""gnn_tt: GNN training with tensor-train compressed node embeddings."""
__version__ = "0.1.0"

__all__ = ["TTEmbedding", "suggest_tt_shapes"]


def __getattr__(name: str):
    # The exports load on first use: every stage imports gnn_tt.common, which runs this file
    # first, and kernels/ is among them; importing the embedding layer (which imports
    # kernels/) from here would make `import kernels.tt_lookup_torch` import itself.
    if name == "TTEmbedding":
        from gnn_tt.embedding.tt_embedding import TTEmbedding
        return TTEmbedding
    if name == "suggest_tt_shapes":
        from gnn_tt.embedding.tt_shapes import suggest_tt_shapes
        return suggest_tt_shapes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
