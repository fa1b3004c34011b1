"""The full learnable node table on the compute device: a replica per rank, looked up with a
plain gather, trained with ``SparseAdam``, its row-sparse gradient averaged over ranks."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from gnn_tt.embedding.node_input import ReplicatedTableInput


class DeviceNodeEmbedding(ReplicatedTableInput):
    r"""The full-table baseline kept on the compute device: one learnable ``embedding_dim``
    row per node (``nn.Embedding(sparse=True)``), trained with ``SparseAdam``, whose moment
    estimates live beside the table. Where :class:`FullNodeEmbedding` pays a host gather, a
    host-to-device copy and a host update per batch, this one pays ``3 N D`` device floats
    (table and two moments).

    Every rank holds a replica. Keep the module out of DDP (sparse gradient, see
    :meth:`ddp_ignored_names`) and call :meth:`sync_gradients` after ``backward()``: the ranks
    all-gather their batches' (row, gradient) pairs, never a dense table, and all apply the
    same averaged update (:func:`~gnn_tt.embedding.full_table.average_sparse_grad_`, the code
    :class:`FullNodeEmbedding` syncs with).

    The table follows ``.to()`` like any parameter; it is created on ``device`` and starts
    from the same values as ``FullNodeEmbedding(num_nodes, embedding_dim, seed=seed)``, so the
    two placements train the same model (and their checkpoints share the key
    ``embedding.weight``).

    Args:
        num_nodes (int): number of rows.
        embedding_dim (int): row width.
        device (torch.device or str): where the table, its optimizer state and the output
            live (default: ``"cpu"``).
        seed (int): seed of the ``N(0, 1)`` initialization, independent of the global RNG so
            every rank builds the same table without a broadcast (default: ``0``).

    Shapes:
        - **input:** ``n_id`` int ``[B]`` (any device)
        - **output:** ``[B, embedding_dim]`` on the table's device
    """

    def __init__(self, num_nodes: int, embedding_dim: int, device: torch.device | str = "cpu",
                 seed: int = 0) -> None:
        super().__init__(num_nodes, embedding_dim, seed)
        # Built on "meta" and materialized empty: nn.Embedding's own N(0, 1) draw (from the
        # global RNG) would be overwritten by reset_parameters anyway.
        self.embedding = nn.Embedding(num_nodes, embedding_dim, sparse=True,
                                      device="meta").to_empty(device=device)
        self.reset_parameters()

    @property
    def device(self) -> torch.device:
        """Where the table, its optimizer state and the output live."""
        return self.embedding.weight.device

    def lookup(self, n_id: Tensor) -> Tensor:
        return self.embedding(n_id.to(self.device))                        # [B, D]
