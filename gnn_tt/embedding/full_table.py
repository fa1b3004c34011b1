"""What every placement of the full learnable node table shares (host: ``FullNodeEmbedding``;
device: ``DeviceNodeEmbedding``; sharded over ranks: ``ShardedNodeEmbedding``): the seeded
initialization, readable one row range at a time, and the cross-rank average of a row-sparse
gradient.

This module imports no placement, so that each of them (``node_input`` included) can import it.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from gnn_tt.common.comm import record

# Entries drawn per host chunk by fill_seeded_normal_ (16 MiB of float32): a multiple of 16,
# see there why.
_INIT_CHUNK = 1 << 22


def comm_device(process_group: dist.ProcessGroup | None = None) -> torch.device:
    """Where the tensors of a collective on ``process_group`` must live: NCCL communicates
    device tensors only (the current CUDA device), gloo works on the host."""
    if dist.get_backend(process_group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@torch.no_grad()
def fill_seeded_normal_(out: Tensor, num_rows: int, seed: int, start: int = 0) -> Tensor:
    r"""Fill ``out`` with rows ``start .. start + len(out)`` of the table
    ``torch.empty(num_rows, D).normal_(generator=torch.Generator().manual_seed(seed))``, drawing
    at most a few MiB on the host at a time, so that no placement needs the whole table in host
    memory to start from the same values as the host table.

    CPU ``normal_`` on a float32 tensor of ``n >= 16`` entries draws ``n`` uniforms, maps each
    aligned block of 16 to 16 normals (Box-Muller), and, when ``16`` does not divide ``n``,
    draws 16 more uniforms for the last 16 entries. Drawing the table in chunks whose sizes are
    multiples of 16 therefore reproduces it exactly, as long as the tail is redrawn the same
    way; ``tests/test_full_tables.py`` checks the equality, so a change in torch shows up.

    Args:
        out (Tensor): contiguous ``[rows, D]``, any device and floating dtype; filled in place.
        num_rows (int): rows of the whole table.
        seed (int): seed of the table's generator.
        start (int): the table row of ``out[0]`` (default: ``0``).

    Returns:
        Tensor: ``out``.
    """
    dim = out.size(1)
    size = num_rows * dim
    first, last = start * dim, (start + out.size(0)) * dim       # entry range of out, [first, last)
    flat = out.view(-1)
    generator = torch.Generator().manual_seed(seed)
    if size < 16:  # a different, per-entry code path in torch: draw it whole
        flat.copy_(torch.empty(size).normal_(generator=generator)[first:last])
        return out
    body = size - size % 16
    # Entries [size - 16, size) are redrawn after the body when 16 does not divide size.
    redrawn_tail = size % 16 != 0 and last > size - 16
    end = body if redrawn_tail else min(body, last)
    for lo in range(0, end, _INIT_CHUNK):
        hi = min(lo + _INIT_CHUNK, body)
        values = torch.empty(hi - lo).normal_(generator=generator)
        a, b = max(lo, first), min(hi, last)
        if a < b:
            flat[a - first:b - first].copy_(values[a - lo:b - lo])
    if redrawn_tail:
        torch.empty(size % 16).uniform_(generator=generator)      # the entries after the body
        tail = torch.empty(16).normal_(generator=generator)       # entries [size - 16, size)
        a = max(size - 16, first)
        flat[a - first:].copy_(tail[a - (size - 16):last - (size - 16)])
    return out


def average_sparse_grad_(weight: Tensor, process_group: dist.ProcessGroup | None = None) -> None:
    r"""Replace ``weight.grad`` (sparse COO over the rows of a replicated table, or ``None``)
    by its average over the ranks of ``process_group``, as DDP averages dense gradients, in
    place on every rank, without densifying it:

    .. math::
        \bar g = \frac{1}{W} \sum_{r=0}^{W-1} \mathrm{coalesce}(g_r)

    where a rank with no gradient contributes nothing but still counts in :math:`W`. Every
    rank all-gathers the coalesced (row, value) pairs of all ranks and coalesces them in rank
    order, so all replicas get the same gradient bits. The result is coalesced, on
    ``weight``'s device; a rank without a gradient gets one too (possibly with no rows). No-op
    when not distributed or in a world of one. Collective: every rank of the group calls it.
    The bytes it hands to the all-gathers are recorded as ``table_all_gather``
    (:func:`gnn_tt.common.comm.record`; :func:`~gnn_tt.common.comm.step_comm_bytes` predicts
    them).

    Args:
        weight (Tensor): the table ``[N, D]``; its ``grad`` is read and replaced.
        process_group (ProcessGroup, optional): the ranks holding replicas (default: the
            default group).
    """
    if not dist.is_available() or not dist.is_initialized():
        return
    world_size = dist.get_world_size(process_group)
    if world_size == 1:
        return
    grad = weight.grad
    if grad is None:  # this rank did no lookup: it contributes nothing
        grad = torch.sparse_coo_tensor(torch.empty(1, 0, dtype=torch.long, device=weight.device),
                                       weight.new_empty(0, weight.size(1)), weight.shape)
    grad = grad.coalesce()
    comm = comm_device(process_group)
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
    record("table_all_gather", sum(t.numel() * t.element_size()
                                   for t in (count, padded_rows, padded_values)))
    rows = torch.cat([r[:c] for r, c in zip(all_rows, counts)]).to(weight.device)
    values = torch.cat([v[:c] for v, c in zip(all_values, counts)]).to(weight.device)
    # coalesce sums the rows several ranks touched, in the same order on every rank.
    total = torch.sparse_coo_tensor(rows.unsqueeze(0), values, weight.shape).coalesce()
    weight.grad = total / world_size
