"""Input layers of the node classifier: what a node id turns into before the first GNN layer.

One contract: ``forward(n_id) -> [len(n_id), embedding_dim]`` on the model's device.
- ``tt``: a learnable TT-compressed table, looked up at ``row_of_node[n_id]`` (the
  partition-aware row assignment); tiny, replicated on every rank, synced by DDP.
- ``full``: the baseline learnable table, kept in host memory with sparse gradients (a
  papers100M-size table fits nowhere else); kept out of DDP, it syncs its own gradient.
- ``features``: the dataset's fixed node features.
- ``tt+features``, ``full+features``: a learnable table (TT or full) beside the dataset's
  features, concatenated (:class:`ConcatInput`); each part keeps its own optimizer, gradient
  sync and DDP treatment.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gnn_tt.common.checks import check_positive_int
from gnn_tt.embedding.full_table import average_sparse_grad_, fill_seeded_normal_
from gnn_tt.embedding.tt_embedding import TTEmbedding

# The input layers build_node_input can build, by name, and the parts each concatenates
# (a learnable table first, then the dataset's features).
KIND_PARTS: dict[str, tuple[str, ...]] = {
    "tt": ("tt",), "full": ("full",), "features": ("features",),
    "tt+features": ("tt", "features"), "full+features": ("full", "features")}
KINDS = tuple(KIND_PARTS)


def kind_parts(kind: str) -> tuple[str, ...]:
    """The parts of the input kind ``kind``: ``"tt"``, ``"full"`` and/or ``"features"``
    (e.g. ``("tt", "features")`` for ``tt+features``). Callers ask this, never the kind's
    spelling, whether an input has a TT part (it needs a row layout) or reads features.

    Raises:
        ValueError: ``kind`` is not one of :data:`KINDS`.
    """
    if kind not in KIND_PARTS:
        raise ValueError(f"unknown node input kind {kind!r} (valid: {', '.join(KINDS)})")
    return KIND_PARTS[kind]


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
    r"""Base class of the input layers: :meth:`forward` checks the node ids once, where they
    enter, and :meth:`lookup` (the subclasses') trusts them, so a composite input checks once
    for all its parts.

    Attributes:
        num_nodes (int): number of node ids accepted.
        embedding_dim (int): width of the output.
    """

    num_nodes: int
    embedding_dim: int

    def forward(self, n_id: Tensor) -> Tensor:
        _check_n_id(n_id, self.num_nodes, self.__class__.__name__)
        return self.lookup(n_id)

    def lookup(self, n_id: Tensor) -> Tensor:
        """The output for ids already checked by :meth:`forward`, ``[len(n_id),
        embedding_dim]``."""
        raise NotImplementedError

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters of each learned part, by part name (``tt_cores``,
        ``full_table``, ``feature_projection``); empty when nothing is learned."""
        return {}

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
        init (str): core initialization, ``"gaussian"`` or ``"ortho"`` (any shape), see
            ``TTEmbedding`` (default: ``"gaussian"``).
        backend (str): ``"auto"``, ``"torch"`` or ``"triton"`` (default: ``"auto"``).

    Shapes:
        - **input:** ``n_id`` int ``[B]``
        - **output:** ``[B, D]``
    """

    def __init__(self, row_of_node: Tensor, embedding_dim: int, tt_ranks: int | Sequence[int] = 16,
                 tt_p_shapes: Sequence[int] | None = None,
                 tt_q_shapes: Sequence[int] | None = None, init: str = "gaussian",
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

    def lookup(self, n_id: Tensor) -> Tensor:
        rows = self.row_of_node[n_id.to(self.row_of_node.device)]       # [B]
        # rows lie in the table by construction (checked in __init__): no second check.
        return self.tt.lookup(rows)                                      # [B, D]

    def embedding_parameters(self) -> list[nn.Parameter]:
        return list(self.tt.parameters())

    def parameter_counts(self) -> dict[str, int]:
        return {"tt_cores": sum(p.numel() for p in self.tt.parameters())}

    def ddp_ignored_names(self) -> list[str]:
        return ["row_of_node"]

    def reset_parameters(self) -> None:
        self.tt.reset_parameters()

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}"


class ReplicatedTableInput(NodeInput):
    r"""Base of the full learnable tables replicated on every rank: one ``embedding_dim`` row
    per node in ``self.embedding`` (an ``nn.Embedding(sparse=True)``), initialized from a
    seeded generator, trained with ``SparseAdam``, kept out of DDP and synced by
    :meth:`sync_gradients`. Subclasses place the table and define :meth:`lookup` and
    :attr:`device`.

    Args:
        num_nodes (int): number of rows.
        embedding_dim (int): row width.
        seed (int): seed of the table's initialization, independent of the global RNG so
            every rank builds the same table without a broadcast.
    """

    embedding: nn.Embedding

    def __init__(self, num_nodes: int, embedding_dim: int, seed: int) -> None:
        super().__init__()
        name = self.__class__.__name__
        for arg, value in (("num_nodes", num_nodes), ("embedding_dim", embedding_dim)):
            check_positive_int(arg, value, name)
        self.num_nodes = num_nodes
        self.embedding_dim = embedding_dim
        self.seed = seed

    @property
    def weight(self) -> nn.Parameter:
        """The table, ``[num_nodes, embedding_dim]``."""
        return self.embedding.weight

    @property
    def device(self) -> torch.device:
        """Where the output goes."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """``N(0, 1)`` entries like ``nn.Embedding``, from a generator seeded with ``seed``:
        the same table on every placement (see
        :func:`~gnn_tt.embedding.full_table.fill_seeded_normal_`)."""
        fill_seeded_normal_(self.embedding.weight, self.num_nodes, self.seed)

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.embedding.weight]

    def parameter_counts(self) -> dict[str, int]:
        return {"full_table": self.embedding.weight.numel()}

    def embedding_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """``SparseAdam`` over the table: only the rows of the batch are updated."""
        return torch.optim.SparseAdam([self.embedding.weight], lr=lr)

    def ddp_ignored_names(self) -> list[str]:
        return ["embedding.weight"]

    def sync_gradients(self, process_group: dist.ProcessGroup | None = None) -> None:
        r"""Replace the table's sparse gradient by its average over the ranks of
        ``process_group``, as DDP averages dense gradients (see
        :func:`~gnn_tt.embedding.full_table.average_sparse_grad_`): all replicas get the same
        gradient. No-op when not distributed; otherwise collective."""
        average_sparse_grad_(self.embedding.weight, process_group)

    def extra_repr(self) -> str:
        return f"{self.num_nodes}, {self.embedding_dim}, device={self.device}"


class FullNodeEmbedding(ReplicatedTableInput):
    r"""The full-table baseline in host memory: one learnable ``embedding_dim`` row per node
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
        super().__init__(num_nodes, embedding_dim, seed)
        self.embedding = nn.Embedding(num_nodes, embedding_dim, sparse=True)
        # Empty tensor that follows .to(): it records the compute device of the output.
        self.register_buffer("_device_anchor", torch.empty(0, device=device), persistent=False)
        self.reset_parameters()

    @property
    def device(self) -> torch.device:
        """Where the output goes."""
        return self._device_anchor.device

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 (nn.Module's signature)
        # The table stays in host memory whatever .to()/.cuda()/.double() ask: moving a
        # papers100M-size table to a GPU is exactly what this baseline must not do.
        self._device_anchor = fn(self._device_anchor)
        return self

    def lookup(self, n_id: Tensor) -> Tensor:
        out = self.embedding(n_id.cpu())                                 # [B, D] on the host
        if self.device.type == "cuda":
            # Pinned memory makes the copy asynchronous; both steps are differentiable, so
            # the gradient comes back to the host as a sparse [num_nodes, D] tensor.
            out = out.pin_memory()
        return out.to(self.device, non_blocking=True)

    def ddp_ignored_names(self) -> list[str]:
        return ["embedding.weight", "_device_anchor"]


class FeatureInput(NodeInput):
    r"""The dataset's fixed node features: ``out = x[n_id]``, nothing learned.

    There is deliberately no learnable projection: the first GNN layer is already a learned
    linear map of its input, so a projection in front adds parameters but no expressive
    power, and the OGB reference numbers feed the raw features. The GNN's ``in_channels``
    is ``x.size(1)``. (Beside a learnable table, :class:`ConcatInput` offers one.)

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

    def lookup(self, n_id: Tensor) -> Tensor:
        out = self.x[n_id.to(self.x.device)]                              # [B, F]
        # Half-precision storage halves the memory; compute in float32 (autocast lowers it).
        return out.float() if out.element_size() < 4 else out

    def ddp_ignored_names(self) -> list[str]:
        return ["x"]

    def extra_repr(self) -> str:
        return f"{self.num_nodes}, {self.embedding_dim}"


class ConcatInput(NodeInput):
    r"""A learnable node table beside the dataset's fixed node features, concatenated:
    ``out = [learnable(n_id) || x[n_id]]``, or with a projection
    ``out = [learnable(n_id) || x[n_id] W^T + b]``.

    Each part keeps the training it has alone: the table's parameters are the
    :meth:`embedding_parameters`, trained by the table's own :meth:`embedding_optimizer`
    (Adam for TT cores, ``SparseAdam`` for the host-resident full table, which also syncs
    its sparse gradient itself in :meth:`sync_gradients`); the features stay a buffer that
    DDP and checkpoints skip. The projection is an ordinary dense layer in front of the
    first GNN layer, so it is trained like the GNN: it is not an embedding parameter, the
    GNN's optimizer (Adam with ``lr`` and ``weight_decay``) steps it and DDP all-reduces its
    gradient.

    A projection adds no expressive power (the first GNN layer is linear in its input); it
    bounds the features' share of the input to ``feature_proj`` columns, which shrinks the
    first layer when ``F`` is large or the GNN is wide (GAT: ``heads * hidden`` outputs).

    Args:
        learnable (NodeInput): the learnable table, e.g. a :class:`TTNodeEmbedding` or a
            :class:`FullNodeEmbedding`: an input with :meth:`embedding_parameters` that
            implements :meth:`lookup`.
        features (FeatureInput): the dataset's features, ``F`` wide.
        feature_proj (int, optional): width of a learned linear projection of the features
            before the concatenation; ``None`` concatenates the raw features
            (default: ``None``).

    Shapes:
        - **input:** ``n_id`` int ``[B]``
        - **output:** ``[B, D + F]``, or ``[B, D + feature_proj]`` with a projection
    """

    def __init__(self, learnable: NodeInput, features: FeatureInput,
                 feature_proj: int | None = None) -> None:
        super().__init__()
        name = self.__class__.__name__
        # Any learnable table that implements the unchecked lookup: the ids are checked once,
        # by this module's forward.
        if not isinstance(learnable, NodeInput) or not learnable.embedding_parameters() \
                or type(learnable).lookup is NodeInput.lookup:
            raise ValueError(f"'{name}' needs a learnable table that implements lookup (such "
                             f"as TTNodeEmbedding or FullNodeEmbedding) as learnable, got "
                             f"{type(learnable).__name__}")
        if not isinstance(features, FeatureInput):
            raise ValueError(f"'{name}' needs a FeatureInput as features, got "
                             f"{type(features).__name__}")
        if learnable.num_nodes != features.num_nodes:
            raise ValueError(f"'{name}': learnable has {learnable.num_nodes} nodes but "
                             f"features has {features.num_nodes}")
        if feature_proj is not None:
            check_positive_int("feature_proj", feature_proj, name)
        self.num_nodes = learnable.num_nodes
        self.learnable = learnable
        self.features = features
        self.feature_proj = feature_proj
        self.projection = None if feature_proj is None else \
            nn.Linear(features.embedding_dim, feature_proj)
        self.embedding_dim = learnable.embedding_dim + (feature_proj or features.embedding_dim)

    def lookup(self, n_id: Tensor) -> Tensor:
        table = self.learnable.lookup(n_id)                              # [B, D]
        feats = self.features.lookup(n_id)                               # [B, F]
        if self.projection is not None:
            feats = self.projection(feats)                               # [B, feature_proj]
        return torch.cat([table, feats], dim=1)                          # [B, embedding_dim]

    def embedding_parameters(self) -> list[nn.Parameter]:
        return self.learnable.embedding_parameters()

    def embedding_optimizer(self, lr: float) -> torch.optim.Optimizer | None:
        """The table's own optimizer (Adam for TT cores, ``SparseAdam`` for a full table)."""
        return self.learnable.embedding_optimizer(lr)

    def ddp_ignored_names(self) -> list[str]:
        return [f"learnable.{n}" for n in self.learnable.ddp_ignored_names()] + \
            [f"features.{n}" for n in self.features.ddp_ignored_names()]

    def sync_gradients(self, process_group: dist.ProcessGroup | None = None) -> None:
        """The table's own sync (the full table's sparse gradient); DDP averages the
        projection's."""
        self.learnable.sync_gradients(process_group)

    def parameter_counts(self) -> dict[str, int]:
        counts = self.learnable.parameter_counts()
        if self.projection is not None:
            counts["feature_projection"] = sum(p.numel() for p in self.projection.parameters())
        return counts

    def reset_parameters(self) -> None:
        self.learnable.reset_parameters()
        if self.projection is not None:
            self.projection.reset_parameters()

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, embedding_dim={self.embedding_dim}"


def build_node_input(kind: str, *, num_nodes: int, embedding_dim: int,
                     row_of_node: Tensor | None = None, tt_ranks: int | Sequence[int] = 16,
                     tt_p_shapes: Sequence[int] | None = None,
                     tt_q_shapes: Sequence[int] | None = None, tt_init: str = "gaussian",
                     backend: str = "auto", x: Tensor | None = None,
                     feature_proj: int | None = None, device: torch.device | str = "cpu",
                     seed: int = 0, placement: str = "host",
                     process_group: dist.ProcessGroup | None = None) -> NodeInput:
    r"""Build the input layer named by ``kind`` (the ``--emb`` option): one part alone, or a
    :class:`ConcatInput` of a learnable table and the features (see :data:`KIND_PARTS`).

    Args:
        kind (str): one of :data:`KINDS`.
        num_nodes (int): number of nodes of the graph.
        embedding_dim (int): width of the learned table (``tt``, ``full`` parts); the
            features keep the dataset's width ``x.size(1)`` (or ``feature_proj``).
        row_of_node (Tensor, optional): kinds with a ``tt`` part, required: int64
            ``[num_nodes]``.
        tt_ranks, tt_p_shapes, tt_q_shapes, tt_init, backend: ``tt`` part only, see
            :class:`TTNodeEmbedding`.
        x (Tensor, optional): kinds with a ``features`` part, required: ``[num_nodes, F]``.
        feature_proj (int, optional): ``tt+features`` and ``full+features`` only: width of a
            learned projection of the features, see :class:`ConcatInput` (default: ``None``).
        device (torch.device or str): ``full`` part only: where its output goes (and where
            the table lives, but for ``host``); the other parts follow the model's
            ``.to(device)`` (default: ``"cpu"``).
        seed (int): ``full`` part only: seed of the table's initialization (default: ``0``).
        placement (str): ``full`` part only: ``host``, ``device`` or ``sharded``, see
            :func:`~gnn_tt.embedding.placement.build_full_table` (default: ``"host"``).
        process_group (ProcessGroup, optional): ``full`` part, ``sharded`` only: the ranks
            sharing the table (default: the default group, if any).
    """
    parts = kind_parts(kind)
    inputs: list[NodeInput] = []
    if "tt" in parts:
        if row_of_node is None:
            raise ValueError(f"build_node_input({kind!r}) needs row_of_node (from "
                             f"partition.assign_rows)")
        if row_of_node.numel() != num_nodes:
            raise ValueError(f"build_node_input({kind!r}): row_of_node has "
                             f"{row_of_node.numel()} entries but num_nodes={num_nodes}")
        inputs.append(TTNodeEmbedding(row_of_node, embedding_dim, tt_ranks=tt_ranks,
                                      tt_p_shapes=tt_p_shapes, tt_q_shapes=tt_q_shapes,
                                      init=tt_init, backend=backend))
    if "full" in parts:
        # The placements' modules import this one: imported when a table is built.
        from gnn_tt.embedding.placement import build_full_table

        # The table draws from its own seeded generator; the host table's nn.Embedding would
        # also advance the global one, which initializes the layers built after it: forked,
        # they start alike under every placement.
        with torch.random.fork_rng(devices=[]):
            inputs.append(build_full_table(placement, num_nodes, embedding_dim, device=device,
                                           seed=seed, process_group=process_group))
    if "features" in parts:
        if x is None:
            raise ValueError(f"build_node_input({kind!r}): the dataset has no node features; "
                             f"use a learned embedding instead (kind 'tt' or 'full')")
        if x.size(0) != num_nodes:
            raise ValueError(f"build_node_input({kind!r}): x has {x.size(0)} rows but "
                             f"num_nodes={num_nodes}")
        inputs.append(FeatureInput(x))
    if len(inputs) == 1:
        if feature_proj is not None:
            raise ValueError(f"build_node_input({kind!r}): feature_proj={feature_proj} "
                             f"projects the features beside a learnable table; kind {kind!r} "
                             f"has none (use one of "
                             f"{', '.join(k for k in KINDS if len(KIND_PARTS[k]) > 1)})")
        return inputs[0]
    return ConcatInput(*inputs, feature_proj=feature_proj)
