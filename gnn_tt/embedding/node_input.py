"""Input layers of the node classifier: what a node id turns into before the first GNN layer.

One contract: ``forward(n_id) -> [len(n_id), embedding_dim]`` on the model's device.
- ``tt``: a learnable TT-compressed table, looked up at ``row_of_node[n_id]`` (the
  partition-aware row assignment); tiny, replicated on every rank, synced by DDP.
- ``full``: the baseline learnable table, kept in host memory with sparse gradients (a
  papers100M-size table fits nowhere else); kept out of DDP, it syncs its own gradient.
- ``features``: the dataset's fixed node features.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from gnn_tt.common.checks import check_positive_int
from gnn_tt.embedding.tt_embedding import TTEmbedding

# The input layers build_node_input can build, by name.
KINDS = ("tt", "full", "features")


def _check_n_id(n_id: Tensor, num_nodes: int, owner: str) -> None:
    if not isinstance(n_id, Tensor) or n_id.dtype.is_floating_point or n_id.dtype == torch.bool \
            or n_id.is_complex():
        raise TypeError(f"'{owner}' expects n_id as an integer tensor, got "
                        f"{getattr(n_id, 'dtype', type(n_id).__name__)}")
    if n_id.dim() != 1:
        raise ValueError(f"'{owner}' expects a 1-D n_id, got shape {list(n_id.shape)}")
    if n_id.numel():
        # Ids enter the model here and everything downstream (row_of_node, the TT lookup)
        # trusts them: a lookup's only range check, one host sync for both bounds. On a GPU a
        # gather with a bad id would fail as a device-side assert instead of this error.
        lo, hi = torch.stack(torch.aminmax(n_id)).tolist()
        if lo < 0 or hi >= num_nodes:
            bad = lo if lo < 0 else hi
            raise IndexError(f"'{owner}': node id {bad} is outside [0, num_nodes={num_nodes})")


class NodeInput(nn.Module):
    r"""Base class of the input layers.

    Attributes:
        num_nodes (int): number of node ids accepted.
        embedding_dim (int): width of the output.
    """

    num_nodes: int
    embedding_dim: int

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The parameters of the node table (TT cores, full table), for their own optimizer;
        empty when the input is fixed."""
        return []

    def embedding_optimizer(self, lr: float) -> torch.optim.Optimizer | None:
        """Adam over :meth:`embedding_parameters` (``None`` when there are none)."""
        params = self.embedding_parameters()
        return torch.optim.Adam(params, lr=lr) if params else None

    def ddp_ignored_names(self) -> list[str]:
        """Names (relative to this module) of the parameters and buffers DDP must neither
        broadcast nor all-reduce: large per-node tensors identical on every rank by
        construction, and tables that sync their gradients themselves."""
        return []

    def sync_gradients(self, process_group: dist.ProcessGroup | None = None) -> None:
        """Average gradients across ranks that DDP does not handle. DDP all-reduces the
        gradients of this base class's parameters, so there is nothing to do here."""


class TTNodeEmbedding(NodeInput):
    r"""A learnable node table in TT format (:class:`~gnn_tt.embedding.tt_embedding.TTEmbedding`), read
    at the node's row: ``out = TT[row_of_node[n_id]]``. With a partition-aware
    ``row_of_node``, nodes close in the graph share TT-core slices.

    Args:
        row_of_node (Tensor): int64 ``[num_nodes]``, the row of each node in
            ``[0, prod(tt_p_shapes))`` (see ``partition.assign_rows``); rows need not be
            distinct (shared rows share an embedding). Kept as a non-persistent buffer: it is
            rebuilt from the partition cache, and checkpoints store its digest.
        embedding_dim (int): output width ``D``.
        tt_ranks (int or list[int]): inner TT ranks (default: ``16``).
        tt_p_shapes (list[int], optional): row factors; default: suggested for
            ``max(row_of_node) + 1`` rows.
        tt_q_shapes (list[int], optional): column factors, product ``D``.
        init (str): core initialization, see ``TTEmbedding`` (default: ``"ortho"``).
        backend (str): ``"auto"``, ``"torch"`` or ``"triton"`` (default: ``"auto"``).

    Shapes:
        - **input:** ``n_id`` int ``[B]``
        - **output:** ``[B, D]``
    """

    def __init__(self, row_of_node: Tensor, embedding_dim: int, tt_ranks: int | Sequence[int] = 16,
                 tt_p_shapes: Sequence[int] | None = None,
                 tt_q_shapes: Sequence[int] | None = None, init: str = "ortho",
                 backend: str = "auto") -> None:
        super().__init__()
        name = self.__class__.__name__
        if not isinstance(row_of_node, Tensor) or row_of_node.dim() != 1 \
                or row_of_node.dtype.is_floating_point or row_of_node.dtype == torch.bool:
            raise ValueError(f"'{name}' needs row_of_node as a 1-D integer tensor, got "
                             f"{getattr(row_of_node, 'dtype', type(row_of_node).__name__)} "
                             f"{list(getattr(row_of_node, 'shape', []))}")
        if row_of_node.numel() == 0:
            raise ValueError(f"'{name}' needs at least one node, got an empty row_of_node")
        lo, hi = (int(v) for v in torch.aminmax(row_of_node))
        num_rows = math.prod(tt_p_shapes) if tt_p_shapes is not None else hi + 1
        if lo < 0 or hi >= num_rows:
            raise ValueError(f"'{name}': row_of_node holds row {lo if lo < 0 else hi}, outside "
                             f"the TT table's rows [0, {num_rows})")
        self.num_nodes = row_of_node.numel()
        self.embedding_dim = embedding_dim
        self.register_buffer("row_of_node", row_of_node.long(), persistent=False)
        self.tt = TTEmbedding(num_rows, embedding_dim, tt_ranks=tt_ranks, tt_p_shapes=tt_p_shapes,
                              tt_q_shapes=tt_q_shapes, init=init, backend=backend)

    def forward(self, n_id: Tensor) -> Tensor:
        _check_n_id(n_id, self.num_nodes, self.__class__.__name__)
        rows = self.row_of_node[n_id.to(self.row_of_node.device)]       # [B]
        # rows lie in the table by construction (checked in __init__): no second check.
        return self.tt.lookup(rows)                                      # [B, D]

    def embedding_parameters(self) -> list[nn.Parameter]:
        return list(self.tt.parameters())

    def ddp_ignored_names(self) -> list[str]:
        return ["row_of_node"]

    def reset_parameters(self) -> None:
        self.tt.reset_parameters()

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}"


class FullNodeEmbedding(NodeInput):
    r"""The full-table baseline: one learnable ``embedding_dim`` row per node, in host memory
    with sparse gradients (``nn.Embedding(sparse=True)``), trained with ``SparseAdam``.

    Each batch gathers its rows on the host and copies them to the compute device (through
    pinned memory, asynchronously, when it is a GPU). The table never leaves the host:
    ``.to(device)`` / ``.cuda()`` move only where the output goes. Keep this module out of
    DDP (sparse gradients; see :meth:`ddp_ignored_names`) and call :meth:`sync_gradients`
    after ``backward()`` so all replicas apply the same averaged update.

    Args:
        num_nodes (int): number of rows.
        embedding_dim (int): row width.
        device (torch.device or str): compute device the output goes to (default: ``"cpu"``).
        seed (int): seed of the table's initialization, independent of the global RNG so
            every rank builds the same table without a broadcast (default: ``0``).

    Shapes:
        - **input:** ``n_id`` int ``[B]`` (any device)
        - **output:** ``[B, embedding_dim]`` on ``device``
    """

    def __init__(self, num_nodes: int, embedding_dim: int, device: torch.device | str = "cpu",
                 seed: int = 0) -> None:
        super().__init__()
        name = self.__class__.__name__
        for arg, value in (("num_nodes", num_nodes), ("embedding_dim", embedding_dim)):
            check_positive_int(arg, value, name)
        self.num_nodes = num_nodes
        self.embedding_dim = embedding_dim
        self.seed = seed
        self.embedding = nn.Embedding(num_nodes, embedding_dim, sparse=True)
        # Empty tensor that follows .to(): it records the compute device of the output.
        self.register_buffer("_device_anchor", torch.empty(0, device=device), persistent=False)
        self.reset_parameters()

    @property
    def weight(self) -> nn.Parameter:
        """The table, ``[num_nodes, embedding_dim]`` on the host."""
        return self.embedding.weight

    @property
    def device(self) -> torch.device:
        """Where the output goes."""
        return self._device_anchor.device

    def reset_parameters(self) -> None:
        """``N(0, 1)`` entries like ``nn.Embedding``, from a generator seeded with ``seed``."""
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            self.embedding.weight.normal_(generator=generator)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 (nn.Module's signature)
        # The table stays in host memory whatever .to()/.cuda()/.double() ask: moving a
        # papers100M-size table to a GPU is exactly what this baseline must not do.
        self._device_anchor = fn(self._device_anchor)
        return self

    def forward(self, n_id: Tensor) -> Tensor:
        _check_n_id(n_id, self.num_nodes, self.__class__.__name__)
        out = self.embedding(n_id.cpu())                                 # [B, D] on the host
        if self.device.type == "cuda":
            # Pinned memory makes the copy asynchronous; both steps are differentiable, so
            # the gradient comes back to the host as a sparse [num_nodes, D] tensor.
            out = out.pin_memory()
        return out.to(self.device, non_blocking=True)

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.embedding.weight]

    def embedding_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """``SparseAdam`` over the table: only the rows of the batch are updated."""
        return torch.optim.SparseAdam([self.embedding.weight], lr=lr)

    def ddp_ignored_names(self) -> list[str]:
        return ["embedding.weight", "_device_anchor"]

    def sync_gradients(self, process_group: dist.ProcessGroup | None = None) -> None:
        r"""Replace the table's sparse gradient by its average over the ranks of
        ``process_group``, as DDP averages dense gradients: every rank all-gathers the
        coalesced (row, value) pairs of all ranks, sums them and divides by the world size,
        so all replicas get the same gradient. No-op when not distributed."""
        if not dist.is_available() or not dist.is_initialized():
            return
        world_size = dist.get_world_size(process_group)
        if world_size == 1:
            return
        weight = self.embedding.weight
        grad = weight.grad
        if grad is None:  # this rank did no lookup: it contributes nothing
            grad = torch.sparse_coo_tensor(torch.empty(1, 0, dtype=torch.long),
                                           weight.new_empty(0, self.embedding_dim),
                                           weight.shape)
        grad = grad.coalesce()
        # NCCL communicates device tensors only; gloo works on the host.
        comm = torch.device("cuda", torch.cuda.current_device()) \
            if dist.get_backend(process_group) == "nccl" else torch.device("cpu")
        rows = grad.indices()[0].to(comm)                                 # [nnz]
        values = grad.values().to(comm)                                   # [nnz, D]
        # all_gather needs equal sizes: share the counts, pad to the largest.
        count = torch.tensor([rows.numel()], device=comm)
        counts = [torch.empty_like(count) for _ in range(world_size)]
        dist.all_gather(counts, count, group=process_group)
        counts = [int(c) for c in counts]
        width = max(counts)
        padded_rows = F.pad(rows, (0, width - rows.numel()))
        padded_values = F.pad(values, (0, 0, 0, width - rows.numel()))
        all_rows = [torch.empty_like(padded_rows) for _ in range(world_size)]
        all_values = [torch.empty_like(padded_values) for _ in range(world_size)]
        dist.all_gather(all_rows, padded_rows, group=process_group)
        dist.all_gather(all_values, padded_values, group=process_group)
        rows = torch.cat([r[:c] for r, c in zip(all_rows, counts)]).cpu()
        values = torch.cat([v[:c] for v, c in zip(all_values, counts)]).cpu()
        # coalesce sums the rows several ranks touched, in the same order on every rank.
        total = torch.sparse_coo_tensor(rows.unsqueeze(0), values, weight.shape).coalesce()
        weight.grad = total / world_size

    def extra_repr(self) -> str:
        return f"{self.num_nodes}, {self.embedding_dim}, device={self.device}"


class FeatureInput(NodeInput):
    r"""The dataset's fixed node features: ``out = x[n_id]``, nothing learned.

    There is deliberately no learnable projection: the first GNN layer is already a learned
    linear map of its input, so a projection in front adds parameters but no expressive
    power, and the OGB reference numbers feed the raw features. The GNN's ``in_channels``
    is ``x.size(1)``.

    Args:
        x (Tensor): floating point features ``[num_nodes, F]``. Kept as a non-persistent
            buffer (it moves with the model, and is not saved in checkpoints: it is data).
            16-bit features are returned as float32.

    Shapes:
        - **input:** ``n_id`` int ``[B]``
        - **output:** ``[B, F]``
    """

    def __init__(self, x: Tensor) -> None:
        super().__init__()
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.dtype.is_floating_point:
            raise ValueError(f"'{self.__class__.__name__}' needs x as a 2-D floating point "
                             f"tensor [num_nodes, F], got "
                             f"{getattr(x, 'dtype', type(x).__name__)} "
                             f"{list(getattr(x, 'shape', []))}")
        self.num_nodes, self.embedding_dim = x.shape
        self.register_buffer("x", x, persistent=False)

    def forward(self, n_id: Tensor) -> Tensor:
        _check_n_id(n_id, self.num_nodes, self.__class__.__name__)
        out = self.x[n_id.to(self.x.device)]                              # [B, F]
        # Half-precision storage halves the memory; compute in float32 (autocast lowers it).
        return out.float() if out.element_size() < 4 else out

    def ddp_ignored_names(self) -> list[str]:
        return ["x"]

    def extra_repr(self) -> str:
        return f"{self.num_nodes}, {self.embedding_dim}"


def build_node_input(kind: str, *, num_nodes: int, embedding_dim: int,
                     row_of_node: Tensor | None = None, tt_ranks: int | Sequence[int] = 16,
                     tt_p_shapes: Sequence[int] | None = None,
                     tt_q_shapes: Sequence[int] | None = None, tt_init: str = "ortho",
                     backend: str = "auto", x: Tensor | None = None,
                     device: torch.device | str = "cpu", seed: int = 0) -> NodeInput:
    r"""Build the input layer named by ``kind`` (the ``--emb`` option).

    Args:
        kind (str): one of :data:`KINDS`.
        num_nodes (int): number of nodes of the graph.
        embedding_dim (int): width of a learned embedding (``tt``, ``full``); ``features``
            keeps the dataset's width ``x.size(1)``.
        row_of_node (Tensor, optional): ``tt`` only, required: int64 ``[num_nodes]``.
        tt_ranks, tt_p_shapes, tt_q_shapes, tt_init, backend: ``tt`` only, see
            :class:`TTNodeEmbedding`.
        x (Tensor, optional): ``features`` only, required: ``[num_nodes, F]``.
        device (torch.device or str): ``full`` only: where its output goes; the other kinds
            follow the model's ``.to(device)`` (default: ``"cpu"``).
        seed (int): ``full`` only: seed of the table's initialization (default: ``0``).
    """
    if kind == "tt":
        if row_of_node is None:
            raise ValueError("build_node_input('tt') needs row_of_node (from "
                             "partition.assign_rows)")
        if row_of_node.numel() != num_nodes:
            raise ValueError(f"build_node_input('tt'): row_of_node has {row_of_node.numel()} "
                             f"entries but num_nodes={num_nodes}")
        return TTNodeEmbedding(row_of_node, embedding_dim, tt_ranks=tt_ranks,
                               tt_p_shapes=tt_p_shapes, tt_q_shapes=tt_q_shapes, init=tt_init,
                               backend=backend)
    if kind == "full":
        return FullNodeEmbedding(num_nodes, embedding_dim, device=device, seed=seed)
    if kind == "features":
        if x is None:
            raise ValueError("build_node_input('features'): the dataset has no node features; "
                             "use a learned embedding instead (kind 'tt' or 'full')")
        if x.size(0) != num_nodes:
            raise ValueError(f"build_node_input('features'): x has {x.size(0)} rows but "
                             f"num_nodes={num_nodes}")
        return FeatureInput(x)
    raise ValueError(f"build_node_input: unknown kind {kind!r} (valid: {', '.join(KINDS)})")
