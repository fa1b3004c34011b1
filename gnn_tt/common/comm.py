r"""Bytes a training step hands to collectives: the counter the step fills, and the formula
it is checked against.

**Convention.** A count is the bytes of the tensors a rank passes to a collective as its own
input, per call: the bucket it all-reduces, the tensor it all-gathers (its part, not the
gathered result), everything it hands to ``all_to_all_single`` (the part addressed to itself
included), the buffers it passes to a broadcast (the source's and the receivers' alike). That
is what the code can count exactly, on every rank, whatever the backend does with it.

What crosses the links depends on the algorithm; :func:`wire_bytes` estimates the bytes one
rank sends, assuming the bandwidth-optimal algorithms (ring, pairwise) NCCL uses for large
messages:

======================  =================  ===============================================
kind                    collective         bytes a rank sends, for input ``b``, ``W`` ranks
======================  =================  ===============================================
``ddp_all_reduce``      ring all-reduce    ``2 (W - 1) / W * b`` (reduce-scatter, all-gather)
``ddp_broadcast``       pipelined chain    ``(W - 1) / W * b`` (all but the last rank send ``b``)
``table_all_gather``    ring all-gather    ``(W - 1) * b`` (every other rank's part passes by)
``table_all_to_all``    pairwise exchange  ``(W - 1) / W * b`` (the part addressed to itself
                                           stays; destinations assumed even)
======================  =================  ===============================================

The time those bytes take is ``wire_bytes / bandwidth`` of one rank's link in one direction
(every rank sends at once, and receives as much as it sends).

**The kinds** (:data:`KINDS`): DDP's all-reduce of the dense gradients (GNN, TT cores, a
feature projection), counted by :func:`counted_allreduce_hook`; DDP's broadcast of the
module buffers before each forward (batch-norm statistics); the replicated full table's
all-gather of its row-sparse gradient (:func:`~gnn_tt.embedding.full_table.average_sparse_grad_`);
the sharded table's all-to-alls (counts, ids, rows and row gradients; the table counts them
itself, in ``ShardedNodeEmbedding.comm_bytes_sent``, and the training epoch adds them). One-off collectives (DDP's
broadcast at construction, its bucket rebuild after the first step) and the per-epoch
reductions (the loss, the time) are not per-step traffic and are not counted.

A counter fills while it is the active one (:func:`counting`); :func:`record` adds to it.
The active counter is one per process, not per thread: DDP's hooks run in autograd's device
threads on a GPU.
"""
# No `from __future__ import annotations`: DDP checks the hook's annotations as objects.
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

# The collective behind each kind of traffic, in the order CommCounter.as_tensor packs them.
COLLECTIVE_OF = {"ddp_all_reduce": "all_reduce", "ddp_broadcast": "broadcast",
                 "table_all_gather": "all_gather", "table_all_to_all": "all_to_all"}
KINDS = tuple(COLLECTIVE_OF)

# What each node table syncs its gradient with, beside DDP's all-reduce: "tt" stands for any
# input whose learnable parameters DDP all-reduces (TT cores; none for fixed features).
TABLE_SYNC = {"tt": None, "host": "table_all_gather", "device": "table_all_gather",
              "sharded": "table_all_to_all"}

# Bytes of the int64 ids, counts and row indices the tables exchange.
INDEX_BYTES = 8


def wire_bytes(kind: str, nbytes: float, world_size: int) -> float:
    """Bytes one rank sends over its links when it hands ``nbytes`` to the collective of
    ``kind`` among ``world_size`` ranks (see the module's table); ``0`` for one rank.

    Raises:
        ValueError: ``kind`` is not one of :data:`KINDS`.
    """
    if kind not in COLLECTIVE_OF:
        raise ValueError(f"unknown communication kind {kind!r} (valid: {', '.join(KINDS)})")
    w = world_size
    factor = {"all_reduce": 2 * (w - 1) / w, "broadcast": (w - 1) / w,
              "all_gather": float(w - 1), "all_to_all": (w - 1) / w}[COLLECTIVE_OF[kind]]
    return factor * nbytes


class CommCounter:
    r"""Bytes this rank handed to collectives, by kind (see the module's convention).

    Example::

        >>> counter = CommCounter()
        >>> with counting(counter):
        ...     loss.backward()          # DDP's hook records its buckets
        >>> counter.bytes["ddp_all_reduce"]

    Attributes:
        bytes (dict[str, int]): bytes by kind, every kind of :data:`KINDS` present.
    """

    def __init__(self) -> None:
        self.bytes = dict.fromkeys(KINDS, 0)

    def add(self, kind: str, nbytes: int) -> None:
        """Count ``nbytes`` more of ``kind``.

        Raises:
            ValueError: ``kind`` is not one of :data:`KINDS`.
        """
        if kind not in self.bytes:
            raise ValueError(f"'{self.__class__.__name__}': unknown kind {kind!r} (valid: "
                             f"{', '.join(KINDS)})")
        self.bytes[kind] += int(nbytes)

    @property
    def total(self) -> int:
        """Bytes of every kind."""
        return sum(self.bytes.values())

    def as_tensor(self) -> torch.Tensor:
        """The counts in :data:`KINDS` order, float64 ``[len(KINDS)]`` (exact below 2^53),
        for a reduction over ranks."""
        return torch.tensor([float(self.bytes[k]) for k in KINDS], dtype=torch.float64)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.bytes})"


_active: CommCounter | None = None


@contextmanager
def counting(counter: CommCounter) -> Iterator[CommCounter]:
    """Make ``counter`` the one :func:`record` adds to, inside the ``with`` block (the one
    active before is restored after it)."""
    global _active
    before, _active = _active, counter
    try:
        yield counter
    finally:
        _active = before


def record(kind: str, nbytes: int) -> None:
    """Add ``nbytes`` of ``kind`` to the active counter; nothing when none is active."""
    if _active is not None:
        _active.add(kind, nbytes)


def counted_allreduce_hook(process_group: dist.ProcessGroup | None,
                           bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: :func:`record` the bucket's bytes as ``ddp_all_reduce``, then
    DDP's default all-reduce of the averaged bucket (``default_hooks.allreduce_hook``), so the
    gradients are the same as without a hook. Register it with
    ``ddp.register_comm_hook(process_group, counted_allreduce_hook)``."""
    buffer = bucket.buffer()
    record("ddp_all_reduce", buffer.numel() * buffer.element_size())
    return default_hooks.allreduce_hook(process_group, bucket)


def counted_buffer_broadcast(ddp: DistributedDataParallel, args: tuple) -> None:
    """Forward pre-hook of a DDP wrapper (``ddp.register_forward_pre_hook``): :func:`record`
    as ``ddp_broadcast`` the bytes of the module buffers DDP is about to broadcast from rank 0
    (none when it syncs none: no buffers, ``broadcast_buffers=False``, or ``no_sync``)."""
    if ddp.will_sync_module_buffers():
        record("ddp_broadcast", sum(b.numel() * b.element_size() for b in ddp.modules_buffers))


def step_comm_bytes(table: str, *, world_size: int, dense_params: int, embedding_dim: int = 0,
                    unique_ids: int = 0, max_unique_ids: int | None = None,
                    served_rows: int | None = None, buffer_bytes: int = 0,
                    element_size: int = 4) -> dict[str, int]:
    r"""Bytes one rank hands to collectives in one training step (the module's convention),
    by kind, when its batch holds ``U = unique_ids`` distinct node ids:

    .. math::
        \text{ddp\_all\_reduce} &= P_{dense} e \\
        \text{ddp\_broadcast} &= \text{buffer\_bytes} \\
        \text{table\_all\_gather} &= 8 + U_{max} (8 + D e)
            \quad (\texttt{host}, \texttt{device}) \\
        \text{table\_all\_to\_all} &= 8 W + 8 U + (S + U) D e \quad (\texttt{sharded})

    The replicated tables all-gather one int64 count, then every rank's coalesced (row,
    gradient) pairs padded to the largest count over the ranks ``U_max``. The sharded table
    sends its per-owner counts, its distinct ids, the ``S`` rows it serves (its own rows that
    the ranks asked for, summed over the ranks; ``U`` on average when ids spread evenly over
    the shards) and, backward, the gradients of its distinct ids. Every placement of the full
    table keeps it out of DDP, so ``dense_params`` counts the GNN (and a feature projection)
    only; with ``tt`` it counts the TT cores too. A world of one sends nothing.

    Args:
        table (str): ``tt`` (no table sync of its own: the TT cores are in
            ``dense_params``), ``host``, ``device`` or ``sharded``: see :data:`TABLE_SYNC`.
        world_size (int): ranks ``W``.
        dense_params (int): parameters DDP all-reduces, ``P_dense``.
        embedding_dim (int): row width ``D`` of a full table (default: ``0``).
        unique_ids (int): distinct ids in this rank's batch, ``U`` (default: ``0``).
        max_unique_ids (int, optional): the largest ``U`` over the ranks (default: ``U``).
        served_rows (int, optional): ``S`` (default: ``U``).
        buffer_bytes (int): bytes of the buffers DDP broadcasts before each forward
            (default: ``0``; SAGE has none).
        element_size (int): bytes per parameter, gradient and table entry, ``e``
            (default: ``4``, float32).

    Returns:
        dict[str, int]: bytes by kind, every kind of :data:`KINDS` present.

    Raises:
        ValueError: ``table`` is not one of :data:`TABLE_SYNC`.
    """
    if table not in TABLE_SYNC:
        raise ValueError(f"'step_comm_bytes': unknown table {table!r} (valid: "
                         f"{', '.join(TABLE_SYNC)})")
    out = dict.fromkeys(KINDS, 0)
    if world_size == 1:
        return out
    u_max = unique_ids if max_unique_ids is None else max_unique_ids
    served = unique_ids if served_rows is None else served_rows
    row = embedding_dim * element_size
    out["ddp_all_reduce"] = dense_params * element_size
    out["ddp_broadcast"] = buffer_bytes
    if TABLE_SYNC[table] == "table_all_gather":
        out["table_all_gather"] = INDEX_BYTES + u_max * (INDEX_BYTES + row)
    elif TABLE_SYNC[table] == "table_all_to_all":
        out["table_all_to_all"] = INDEX_BYTES * (world_size + unique_ids) + \
            (served + unique_ids) * row
    return out
