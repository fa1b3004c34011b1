r"""The full learnable node table sharded over ranks: rank ``r`` owns a contiguous block of
rows on its device; a lookup fetches each distinct id's row from its owner with
``all_to_all_single``, and the backward sends the row gradients back to the owners, who apply
``SparseAdam`` to their own rows.

Per lookup of ``B`` ids with ``U`` distinct ones, rank ``r`` sends (see
:func:`sharded_comm_bytes`): the per-owner counts (``8 W`` bytes), its distinct ids (``8 U``),
the rows it owns that the ranks asked for (``S_r D e``, ``e`` the element size) and, in the
backward, the gradients of its distinct ids (``U D e``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from gnn_tt.common.checks import check_positive_int
from gnn_tt.embedding.full_table import comm_device, fill_seeded_normal_
from gnn_tt.embedding.node_input import NodeInput

# Keys of shard_state_dict() that say which rows a shard holds.
_SHARD_KEYS = ("num_nodes", "embedding_dim", "world_size", "rank", "row_start", "row_stop")


def rows_of_rank(num_nodes: int, world_size: int, rank: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` that ``rank`` owns: ``ceil(num_nodes / world_size)`` rows
    per rank in rank order, so the owner of row ``i`` is ``i // ceil(num_nodes / world_size)``;
    the last ranks own fewer rows (none when ``num_nodes`` is small).

    Args:
        num_nodes (int): rows of the table.
        world_size (int): number of shards.
        rank (int): the shard, in ``[0, world_size)``.
    """
    check_positive_int("num_nodes", num_nodes, "rows_of_rank")
    check_positive_int("world_size", world_size, "rows_of_rank")
    if not 0 <= rank < world_size:
        raise ValueError(f"'rows_of_rank' needs rank in [0, world_size={world_size}), got {rank}")
    per_rank = math.ceil(num_nodes / world_size)
    return min(rank * per_rank, num_nodes), min((rank + 1) * per_rank, num_nodes)


def sharded_comm_bytes(n_ids: Sequence[Tensor], num_nodes: int, embedding_dim: int,
                       element_size: int = 4) -> list[int]:
    r"""Bytes each rank hands to ``all_to_all_single`` for one lookup and its backward, when
    rank ``r`` looks up ``n_ids[r]``:

    .. math::
        8 W + 8 U_r + (S_r + U_r) \, D \, e

    with ``U_r`` the distinct ids of rank ``r``, ``S_r`` the rows rank ``r`` owns summed over
    the ranks' distinct ids (the rows it serves), ``e`` the element size. The counts cover the
    whole input of each call, the part a rank addresses to itself included. A world of one
    communicates nothing. :attr:`ShardedNodeEmbedding.comm_bytes_sent` counts the same.

    Args:
        n_ids (Sequence[Tensor]): the ids each rank looks up, one tensor per rank.
        num_nodes (int): rows of the table.
        embedding_dim (int): row width ``D``.
        element_size (int): bytes per table entry (default: ``4``, float32).

    Returns:
        list[int]: bytes per rank.
    """
    world_size = len(n_ids)
    if world_size == 1:
        return [0]
    per_rank = math.ceil(num_nodes / world_size)
    unique = [torch.unique(n_id.cpu()) for n_id in n_ids]
    served = sum(torch.bincount(u // per_rank, minlength=world_size) for u in unique).tolist()
    index = torch.empty(0, dtype=torch.long).element_size()
    return [index * (world_size + u.numel()) + (served[r] + u.numel()) * embedding_dim
            * element_size for r, u in enumerate(unique)]


class ShardedNodeEmbedding(NodeInput):
    r"""The full-table baseline sharded over the ranks of ``process_group``: rank ``r`` owns
    rows ``rows_of_rank(num_nodes, W, r)`` (``ceil(N / W)`` rows, on ``device``) and their
    ``SparseAdam`` state, so a table up to ``W`` times larger than one device holds trains.

    **Lookup** (collective: every rank calls it, in the same order, its batch empty or not):
    the batch's ids are deduplicated; each distinct id goes to its owner
    (``all_to_all_single``, after an ``all_to_all_single`` of the per-owner counts); the owners
    gather their rows and send them back (a second ``all_to_all_single``); the rows are
    expanded to the batch order.

    **Backward** (collective too: every rank must backpropagate through each training
    lookup, as under DDP): the summed gradient of each distinct id goes back to its owner,
    which sums the contributions of all ranks and divides by ``W``, the average DDP and
    :meth:`FullNodeEmbedding.sync_gradients` take:

    .. math::
        \bar g_i = \frac{1}{W} \sum_{r=0}^{W-1} \sum_{b:\, n^{(r)}_b = i} \delta^{(r)}_b

    for each row ``i`` this rank owns (ranks that did not look ``i`` up count in ``W``). It
    lands in :attr:`weight`'s ``.grad`` as a sparse tensor over the shard, one entry per row
    (none when nobody asked for this shard, so ``SparseAdam``'s step count advances on every
    rank alike); :meth:`embedding_optimizer` then updates this rank's rows only. The replicas
    of :class:`FullNodeEmbedding` after :meth:`~FullNodeEmbedding.sync_gradients` take the
    same steps, to rounding (summation order).

    In a single process (no process group, or a world of one) the table is one shard holding
    every row and nothing is communicated. The table starts from the same values as
    ``FullNodeEmbedding(num_nodes, embedding_dim, seed=seed)`` (each rank draws the seeded
    stream up to its last row, in host chunks of a few MiB).

    The shard is :attr:`weight`, a parameter (autograd, ``.to()`` and the optimizer see it),
    but it is left out of ``state_dict()``, which rank 0 writes and every rank reads: save
    and restore it, with its optimizer state, through :meth:`shard_state_dict` and
    :meth:`load_shard_state_dict` on every rank. Keep it out of DDP
    (:meth:`ddp_ignored_names`). A ``process_group`` of its own keeps its collectives apart
    from DDP's, which the backward interleaves with.

    Args:
        num_nodes (int): number of rows.
        embedding_dim (int): row width.
        device (torch.device or str): where the shard, its optimizer state and the output
            live; with NCCL the current CUDA device (default: ``"cpu"``).
        seed (int): seed of the ``N(0, 1)`` initialization (default: ``0``).
        process_group (ProcessGroup, optional): the ranks sharing the table (default: the
            default group when one is initialized, else a single process).

    Shapes:
        - **input:** ``n_id`` int ``[B]`` (any device)
        - **output:** ``[B, embedding_dim]`` on the shard's device

    Attributes:
        comm_bytes_sent (int): bytes this rank has handed to ``all_to_all_single`` in lookups
            and their backwards (:func:`sharded_comm_bytes` predicts it); reset it freely.
    """

    def __init__(self, num_nodes: int, embedding_dim: int, device: torch.device | str = "cpu",
                 seed: int = 0, process_group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        name = self.__class__.__name__
        for arg, value in (("num_nodes", num_nodes), ("embedding_dim", embedding_dim)):
            check_positive_int(arg, value, name)
        distributed = dist.is_available() and dist.is_initialized()
        if process_group is not None and not distributed:
            raise ValueError(f"'{name}' got a process_group but torch.distributed is not "
                             f"initialized")
        self.rank = dist.get_rank(process_group) if distributed else 0
        self.world_size = dist.get_world_size(process_group) if distributed else 1
        if self.rank < 0:
            raise ValueError(f"'{name}': this process is not a member of process_group")
        self.num_nodes = num_nodes
        self.embedding_dim = embedding_dim
        self.seed = seed
        self.process_group = process_group
        self.rows_per_rank = math.ceil(num_nodes / self.world_size)
        self.row_start, self.row_stop = rows_of_rank(num_nodes, self.world_size, self.rank)
        self.weight = nn.Parameter(torch.empty(self.row_stop - self.row_start, embedding_dim,
                                               device=device))
        self.comm_bytes_sent = 0
        self.reset_parameters()

    @property
    def device(self) -> torch.device:
        """Where the shard, its optimizer state and the output live."""
        return self.weight.device

    def reset_parameters(self) -> None:
        """``N(0, 1)`` entries, equal to rows ``[row_start, row_stop)`` of
        :class:`FullNodeEmbedding`'s table for the same seed."""
        fill_seeded_normal_(self.weight, self.num_nodes, self.seed, start=self.row_start)

    def lookup(self, n_id: Tensor) -> Tensor:
        return _ShardedLookup.apply(n_id.to(self.device), self.weight, self)

    def _all_to_all(self, tensor: Tensor, output_split_sizes: list[int],
                    input_split_sizes: list[int]) -> Tensor:
        """``all_to_all_single`` over the table's group, on the device the backend needs,
        counted in :attr:`comm_bytes_sent`; the identity in a world of one.

        Shapes:
            - **input:** ``tensor`` ``[sum(input_split_sizes), *]``
            - **output:** ``[sum(output_split_sizes), *]`` on ``tensor``'s device
        """
        if self.world_size == 1:
            return tensor
        comm = comm_device(self.process_group)
        send = tensor.to(comm).contiguous()
        out = send.new_empty(sum(output_split_sizes), *tensor.shape[1:])
        dist.all_to_all_single(out, send, output_split_sizes, input_split_sizes,
                               group=self.process_group)
        self.comm_bytes_sent += send.numel() * send.element_size()
        return out.to(tensor.device)

    def embedding_parameters(self) -> list[nn.Parameter]:
        """This rank's shard."""
        return [self.weight]

    def parameter_counts(self) -> dict[str, int]:
        """The whole table's, over all shards (this rank holds ``weight.numel()``)."""
        return {"full_table": self.num_nodes * self.embedding_dim}

    def embedding_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """``SparseAdam`` over this rank's shard: the backward leaves the rank-averaged
        gradient of the rows asked for in ``weight.grad``, and ``step()`` updates those rows
        only. Its state is the shard's (:meth:`shard_state_dict` saves it)."""
        return torch.optim.SparseAdam([self.weight], lr=lr)

    def ddp_ignored_names(self) -> list[str]:
        return ["weight"]

    def sync_gradients(self, process_group: dist.ProcessGroup | None = None) -> None:
        """Nothing to do: the backward already averaged the gradient over the ranks."""

    @torch.no_grad()
    def full_weight(self) -> Tensor:
        """The whole table, ``[num_nodes, embedding_dim]`` on the shard's device, gathered
        from every rank (collective; for tests and small tables)."""
        if self.world_size == 1:
            return self.weight.detach().clone()
        comm = comm_device(self.process_group)
        # all_gather needs equal sizes: every shard padded to rows_per_rank rows. Shards are
        # full up to the last non-empty one, so the padding all comes after row num_nodes.
        padded = F.pad(self.weight.detach(), (0, 0, 0, self.rows_per_rank - self.weight.size(0)))
        parts = [torch.empty_like(padded, device=comm) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.to(comm), group=self.process_group)
        return torch.cat(parts)[:self.num_nodes].to(self.device)

    def shard_state_dict(self, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
        """This rank's rows, where they sit in the table and, given the optimizer of
        :meth:`embedding_optimizer`, its state: a dict of tensors and ints that
        ``torch.load(weights_only=True)`` reads back. Every rank saves its own.

        Args:
            optimizer (torch.optim.Optimizer, optional): the shard's optimizer.
        """
        return {"num_nodes": self.num_nodes, "embedding_dim": self.embedding_dim,
                "world_size": self.world_size, "rank": self.rank, "row_start": self.row_start,
                "row_stop": self.row_stop, "weight": self.weight.detach().clone(),
                "optimizer": None if optimizer is None else optimizer.state_dict()}

    def load_shard_state_dict(self, state: dict[str, Any],
                              optimizer: torch.optim.Optimizer | None = None) -> None:
        """Restore a :meth:`shard_state_dict` saved by this rank under the same world size.

        Args:
            state (dict): the saved shard.
            optimizer (torch.optim.Optimizer, optional): the shard's optimizer, to restore
                its state too; the saved state is ignored when ``None``.

        Raises:
            ValueError: ``state`` is not a shard, or holds other rows than this rank owns
                (another table, world size or rank), or has no optimizer state to restore.
        """
        name = self.__class__.__name__
        missing = [k for k in (*_SHARD_KEYS, "weight", "optimizer")
                   if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(f"'{name}': not a shard state dict (missing {', '.join(missing)})")
        if (state["num_nodes"], state["embedding_dim"]) != (self.num_nodes, self.embedding_dim):
            raise ValueError(f"'{name}': the shard belongs to a {state['num_nodes']} x "
                             f"{state['embedding_dim']} table, this table is {self.num_nodes} x "
                             f"{self.embedding_dim}")
        saved = tuple(state[k] for k in _SHARD_KEYS[2:])
        if saved != (self.world_size, self.rank, self.row_start, self.row_stop):
            raise ValueError(f"'{name}': the shard holds rows [{state['row_start']}, "
                             f"{state['row_stop']}) of rank {state['rank']} of "
                             f"{state['world_size']}, but this is rank {self.rank} of "
                             f"{self.world_size}, owning rows [{self.row_start}, "
                             f"{self.row_stop}): load each rank's shard under the world size "
                             f"it was saved with")
        if tuple(state["weight"].shape) != tuple(self.weight.shape):
            raise ValueError(f"'{name}': the shard's weight has shape "
                             f"{list(state['weight'].shape)}, expected {list(self.weight.shape)}")
        if optimizer is not None and state["optimizer"] is None:
            raise ValueError(f"'{name}': the shard was saved without optimizer state")
        with torch.no_grad():
            self.weight.copy_(state["weight"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str,
                            keep_vars: bool) -> None:
        # The rows differ per rank, and a module state_dict is written by rank 0 and read by
        # every rank: the shard is saved by shard_state_dict() instead.
        pass

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        if prefix + "weight" in state_dict:
            error_msgs.append(f"'{self.__class__.__name__}': {prefix}weight would give every "
                              f"rank the same rows; restore each rank's shard with "
                              f"load_shard_state_dict")

    def extra_repr(self) -> str:
        return (f"{self.num_nodes}, {self.embedding_dim}, rows=[{self.row_start}, "
                f"{self.row_stop}), rank={self.rank}/{self.world_size}, device={self.device}")


class _ShardedLookup(torch.autograd.Function):
    """Rows of ``n_id`` from their owners; the backward returns this rank's rank-averaged
    sparse gradient over its shard (see :class:`ShardedNodeEmbedding`)."""

    @staticmethod
    def forward(ctx: Any, n_id: Tensor, weight: Tensor, table: ShardedNodeEmbedding) -> Tensor:
        ids, inverse = torch.unique(n_id, return_inverse=True)          # [U] sorted, [B]
        # Sorted ids are grouped by owner, as all_to_all_single's splits need.
        sent = torch.bincount(ids // table.rows_per_rank, minlength=table.world_size)  # [W]
        received = table._all_to_all(sent, [1] * table.world_size, [1] * table.world_size)
        # The split sizes must be host ints: one host sync for both.
        counts = torch.cat([sent, received]).tolist()
        sent, received = counts[:table.world_size], counts[table.world_size:]
        asked = table._all_to_all(ids, received, sent)                  # [S] ids this rank owns
        local = asked - table.row_start                                 # [S] shard rows
        rows = table._all_to_all(weight[local], sent, received)         # [U, D]
        ctx.save_for_backward(inverse, local)
        ctx.table, ctx.splits, ctx.num_unique = table, (sent, received), ids.numel()
        return rows[inverse]                                            # [B, D]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[None, Tensor, None]:
        inverse, local = ctx.saved_tensors
        table, (sent, received) = ctx.table, ctx.splits
        grad_unique = grad_out.new_zeros(ctx.num_unique, grad_out.size(1))
        grad_unique.index_add_(0, inverse, grad_out)                     # [U, D]
        grads = table._all_to_all(grad_unique, received, sent)           # [S, D] by source rank
        # coalesce sums the ranks' gradients of each row; then the rank average.
        shape = (table.row_stop - table.row_start, grad_out.size(1))
        grad = torch.sparse_coo_tensor(local.unsqueeze(0), grads, shape,
                                       check_invariants=False).coalesce()
        return None, grad / table.world_size, None
