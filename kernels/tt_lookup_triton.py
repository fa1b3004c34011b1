r"""Fused Triton kernels for the TT-matrix embedding lookup (d = 3) and its core gradients.

Row ``i`` of the table has digits ``(i1, i2, i3)`` with ``i = (i1*p2 + i2)*p3 + i3`` and, seen as
a ``(q1, q2, q3)`` tensor, ``W[i, (j1, j2, j3)] = G1[0, i1, j1, :] . G2[:, i2, j2, :] .
G3[:, i3, j3, 0]`` (DESIGN.md section 1). A batch of ``B`` ids is computed in two launches:

1. ``_tt_prefix_kernel``: one program per unique prefix ``u = (i1, i2)`` forms
   ``T12[u] = G1[i1] x G2[i2]``, a ``(q1*q2, R2)`` matrix, once for all rows sharing it.
2. ``_tt_rows_kernel``: a block of rows per program, taken in prefix order so that they share
   ``T12`` slices, ``out[b] = T12[inv[b]] x G3[i3[b]]`` accumulated in fp32 (fp64 for fp64
   cores) and written in the output dtype.

The backward never holds a per-row ``R x R`` tensor; every core gradient is a segmented
reduction over rows (or unique prefixes) sorted by the slice they update:

- ``_tt_grad_t12_kernel``: ``dT12[u] = sum_{b: inv[b]=u} dout[b] G3[i3[b]]^T`` (rows by prefix),
- ``_tt_grad_core3_kernel``: ``dG3[i3] = sum_{b: i3[b]=i3} T12[inv[b]]^T dout[b]`` (rows by i3),
- ``_tt_grad_core2_kernel`` / ``_tt_grad_core1_kernel``: ``dG2[i2]``, ``dG1[i1]`` from ``dT12``
  (unique prefixes by i2 / by i1).

Runs of one slice longer than ``_CHUNK_ROWS`` rows (``_CHUNK_PREFIXES`` prefixes) are split
over several programs, so skewed ids (one hot digit) still fill the GPU. With
``deterministic=True`` (default) a split slice's chunks write partial sums that
``_segment_sum_kernel`` adds in chunk order: results are bitwise reproducible.
``deterministic=False`` lets the chunks ``tl.atomic_add`` into the slice instead: one pass less
and no partial buffer, but the order of float additions (so the last bits) varies run to run.

The chunk plans of the four reductions are built on the device and their sizes read back in
one host sync per backward (the forward has two: the id range check and the prefix count).

Products are rank-1 updates of a register tile (broadcast multiply-add; reduced across rows
once, after the loop) instead of ``tl.dot``: any q factor and any rank (1 included, under
``tl.dot``'s minimum of 16) compiles, and on an H100 a ``tl.dot`` version (exact fp32,
``input_precision="ieee"``, operands padded to 16) was slower: at rank 32, D = 64, B = 1e6 the
rows kernel took 1.18 ms against 0.83 and the dT12 kernel 1.41 ms against 0.55
(docs/benchmarks.md). Non-power-of-2 sizes are padded to the next power of 2 and masked.

Triton kernels run on CUDA tensors; CPU tensors need ``TRITON_INTERPRET=1`` set before triton is
first imported: the interpreter is chosen when each ``@triton.jit`` function is decorated, and
that includes triton.language's own helpers such as ``tl.sum``.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Sequence

import torch
import triton
import triton.language as tl
from triton import knobs
from triton.runtime.interpreter import InterpretedFunction
from torch import Tensor

_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float64)
# Values of a program's accumulator tile (rows x slice): 4096 fp32 are 32 registers a thread
# at 4 warps. The row counts of the tiles below are the largest powers of 2 that fit, capped.
_TILE = 4096
# At most, rows per program of the forward row kernel ...
_MAX_BLOCK_ROWS = 64
# ... and rows loaded per step by the segmented backward kernels.
_BLOCK_SEG = 16
# Items (rows; unique prefixes) one backward program reduces at most: longer runs of one
# gradient slice are split for parallelism and recombined (ordered sum, or atomics).
_CHUNK_ROWS = 256
_CHUNK_PREFIXES = 16
_warned_fallback: set[int] = set()


@triton.jit
def _tt_prefix_kernel(
    g1_ptr, g2_ptr, i1_ptr, i2_ptr, t12_ptr,
    P2, Q1, Q2, R1, R2,
    ACC_DTYPE: tl.constexpr, BLOCK_Q12: tl.constexpr, BLOCK_R2: tl.constexpr,
):
    # One unique prefix u per program: T12[u] (q1*q2, R2) = sum_r G1[0, i1, j1, r] G2[r, i2, j2, :].
    u = tl.program_id(0).to(tl.int64)
    i1 = tl.load(i1_ptr + u)
    i2 = tl.load(i2_ptr + u)
    m = tl.arange(0, BLOCK_Q12)  # m = j1*q2 + j2
    s = tl.arange(0, BLOCK_R2)
    mask_m = m < Q1 * Q2
    mask = mask_m[:, None] & (s < R2)[None, :]
    j1 = m // Q2
    j2 = m % Q2
    acc = tl.zeros((BLOCK_Q12, BLOCK_R2), dtype=ACC_DTYPE)
    for r in range(R1):
        a = tl.load(g1_ptr + (i1 * Q1 + j1) * R1 + r, mask=mask_m, other=0.0).to(ACC_DTYPE)
        b_off = ((r * P2 + i2) * Q2 + j2)[:, None] * R2 + s[None, :]
        b = tl.load(g2_ptr + b_off, mask=mask, other=0.0).to(ACC_DTYPE)
        acc += a[:, None] * b
    tl.store(t12_ptr + (u * (Q1 * Q2) + m[:, None]) * R2 + s[None, :], acc, mask=mask)


@triton.jit
def _tt_rows_kernel(
    t12_ptr, g3_ptr, perm_ptr, inv_sorted_ptr, i3_ptr, out_ptr,
    B, P3, Q12, Q3, R2,
    ACC_DTYPE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_Q12: tl.constexpr,
    BLOCK_Q3: tl.constexpr,
):
    # A (BLOCK_B rows) x (BLOCK_Q12 x q3 columns) tile of out, column c = j12*q3 + j3:
    # out[b, j12, j3] = sum_s T12[inv[b], j12, s] G3[s, i3[b], j3], one rank-1 update of the
    # (rows, j12, j3) tile per s, so each step loads BLOCK_B*(q12 + q3) values, not
    # BLOCK_B*q12*q3. Rows are taken in prefix order (row perm[k] is the k-th), so a tile's
    # rows mostly share one T12 slice and its loads hit the same cache lines.
    pos = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    m = tl.program_id(1) * BLOCK_Q12 + tl.arange(0, BLOCK_Q12)  # m = j12
    j = tl.arange(0, BLOCK_Q3)  # j = j3
    mask_b = pos < B
    mask_t = mask_b[:, None] & (m < Q12)[None, :]
    mask_g = mask_b[:, None] & (j < Q3)[None, :]
    rows = tl.load(perm_ptr + pos, mask=mask_b, other=0)
    inv = tl.load(inv_sorted_ptr + pos, mask=mask_b, other=0)
    i3 = tl.load(i3_ptr + rows, mask=mask_b, other=0)
    # T12[u, j12, s] sits at (u*q12 + j12)*R2 + s; G3[s, i3, j3, 0] at (s*p3 + i3)*q3 + j3.
    t_off = (inv[:, None] * Q12 + m[None, :]) * R2
    g_off = i3[:, None] * Q3 + j[None, :]
    acc = tl.zeros((BLOCK_B, BLOCK_Q12, BLOCK_Q3), dtype=ACC_DTYPE)
    for s in range(R2):
        t = tl.load(t12_ptr + t_off + s, mask=mask_t, other=0.0)
        g = tl.load(g3_ptr + s * P3 * Q3 + g_off, mask=mask_g, other=0.0).to(ACC_DTYPE)
        acc += t[:, :, None] * g[:, None, :]
    out = acc.to(out_ptr.dtype.element_ty)
    out_off = (rows[:, None, None] * Q12 + m[None, :, None]) * Q3 + j[None, None, :]
    tl.store(out_ptr + out_off, out, mask=mask_t[:, :, None] & mask_g[:, None, :])


@triton.jit
def _store_slice(out_ptr, partial_ptr, dest, local, acc, mask, SLICE, ATOMIC: tl.constexpr):
    # One chunk's sum for one gradient slice of SLICE values (local: offsets inside the slice).
    if ATOMIC:  # the chunks of a slice meet here; the float addition order is not fixed
        tl.atomic_add(out_ptr + dest * SLICE + local, acc, mask=mask)
    else:
        # dest >= 0: the chunk is its slice's only one and writes it; dest < 0: row -dest-1 of
        # the partial buffer, summed in chunk order by _segment_sum_kernel.
        # dest is broadcast to the tile first: the interpreter cannot mask with a scalar bool.
        dest_tile = tl.full(local.shape, 0, tl.int64) + dest
        row = tl.where(dest_tile >= 0, dest_tile, -dest_tile - 1)
        tl.store(out_ptr + row * SLICE + local, acc, mask=mask & (dest_tile >= 0))
        tl.store(partial_ptr + row * SLICE + local, acc, mask=mask & (dest_tile < 0))


@triton.jit
def _segment_sum_kernel(
    partial_ptr, start_ptr, end_ptr, key_ptr, out_ptr, SLICE, BLOCK: tl.constexpr,
):
    # out[key] = sum of partial rows start..end-1 in order (deterministic), BLOCK values a program.
    pid = tl.program_id(0)
    start = tl.load(start_ptr + pid)
    end = tl.load(end_ptr + pid)
    key = tl.load(key_ptr + pid)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < SLICE
    acc = tl.zeros((BLOCK,), dtype=out_ptr.dtype.element_ty)
    for k in range(start, end):
        acc += tl.load(partial_ptr + k * SLICE + cols, mask=mask, other=0.0)
    tl.store(out_ptr + key * SLICE + cols, acc, mask=mask)


@triton.jit
def _tt_grad_t12_kernel(
    dout_ptr, g3_ptr, i3_ptr, order_ptr, start_ptr, end_ptr, dest_ptr, dt12_ptr, partial_ptr,
    P3, Q12, Q3, R2, D,
    ACC_DTYPE: tl.constexpr, ATOMIC: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_Q12: tl.constexpr, BLOCK_R2: tl.constexpr,
):
    # Over a chunk of rows b sharing one prefix u: dT12[u] (q12, R2) += dout[b] viewed
    # (q12, q3) times G3[:, i3[b], :, 0]^T (q3, R2).
    pid = tl.program_id(0)
    start = tl.load(start_ptr + pid)
    end = tl.load(end_ptr + pid)
    m = tl.arange(0, BLOCK_Q12)
    s = tl.arange(0, BLOCK_R2)
    mask_m = m < Q12
    mask_s = s < R2
    # Per-row rank-1 updates go to a (BLOCK_B, q12, R2) accumulator; the cross-row sum (a
    # reduction across threads) is done once, after the loop.
    acc = tl.zeros((BLOCK_B, BLOCK_Q12, BLOCK_R2), dtype=ACC_DTYPE)
    for off in range(start, end, BLOCK_B):
        idx = off + tl.arange(0, BLOCK_B)
        mask_b = idx < end
        rows = tl.load(order_ptr + idx, mask=mask_b, other=0)
        i3 = tl.load(i3_ptr + rows, mask=mask_b, other=0)
        for j3 in range(Q3):
            d = tl.load(dout_ptr + rows[:, None] * D + m[None, :] * Q3 + j3,
                        mask=mask_b[:, None] & mask_m[None, :], other=0.0).to(ACC_DTYPE)
            g = tl.load(g3_ptr + (s[None, :] * P3 + i3[:, None]) * Q3 + j3,
                        mask=mask_b[:, None] & mask_s[None, :], other=0.0).to(ACC_DTYPE)
            acc += d[:, :, None] * g[:, None, :]
    _store_slice(dt12_ptr, partial_ptr, tl.load(dest_ptr + pid), m[:, None] * R2 + s[None, :],
                 tl.sum(acc, axis=0), mask_m[:, None] & mask_s[None, :], Q12 * R2, ATOMIC)


@triton.jit
def _tt_grad_core3_kernel(
    dout_ptr, t12_ptr, inv_ptr, order_ptr, start_ptr, end_ptr, dest_ptr, dg3t_ptr, partial_ptr,
    Q12, Q3, R2, D,
    ACC_DTYPE: tl.constexpr, ATOMIC: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_R2: tl.constexpr, BLOCK_Q3: tl.constexpr,
):
    # Over a chunk of rows b sharing one digit i3: dG3t[i3] (R2, q3) += T12[inv[b]]^T (R2, q12)
    # times dout[b] viewed (q12, q3). dG3t is G3's gradient laid out (p3, R2, q3).
    pid = tl.program_id(0)
    start = tl.load(start_ptr + pid)
    end = tl.load(end_ptr + pid)
    s = tl.arange(0, BLOCK_R2)
    j3 = tl.arange(0, BLOCK_Q3)
    mask_s = s < R2
    mask_j = j3 < Q3
    acc = tl.zeros((BLOCK_B, BLOCK_R2, BLOCK_Q3), dtype=ACC_DTYPE)  # summed over rows at the end
    for off in range(start, end, BLOCK_B):
        idx = off + tl.arange(0, BLOCK_B)
        mask_b = idx < end
        rows = tl.load(order_ptr + idx, mask=mask_b, other=0)
        inv = tl.load(inv_ptr + rows, mask=mask_b, other=0)
        for j12 in range(Q12):
            t = tl.load(t12_ptr + (inv[:, None] * Q12 + j12) * R2 + s[None, :],
                        mask=mask_b[:, None] & mask_s[None, :], other=0.0)
            d = tl.load(dout_ptr + rows[:, None] * D + j12 * Q3 + j3[None, :],
                        mask=mask_b[:, None] & mask_j[None, :], other=0.0).to(ACC_DTYPE)
            acc += t[:, :, None] * d[:, None, :]
    _store_slice(dg3t_ptr, partial_ptr, tl.load(dest_ptr + pid), s[:, None] * Q3 + j3[None, :],
                 tl.sum(acc, axis=0), mask_s[:, None] & mask_j[None, :], R2 * Q3, ATOMIC)


@triton.jit
def _tt_grad_core2_kernel(
    dt12_ptr, g1_ptr, uniq_i1_ptr, order_ptr, start_ptr, end_ptr, dest_ptr, dg2t_ptr,
    partial_ptr, Q1, Q2, R1, R2,
    ACC_DTYPE: tl.constexpr, ATOMIC: tl.constexpr, BLOCK_R1: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # Over a chunk of unique prefixes u sharing one digit i2: dG2t[i2] (R1, q2*R2) += sum over j1
    # of G1[0, i1(u), j1, :]^T (R1, 1) times dT12[u, j1*q2:(j1+1)*q2, :] viewed (1, q2*R2).
    # dG2t is G2's gradient laid out (p2, R1, q2, R2).
    pid = tl.program_id(0)
    start = tl.load(start_ptr + pid)
    end = tl.load(end_ptr + pid)
    r = tl.arange(0, BLOCK_R1)
    c = tl.arange(0, BLOCK_C)  # c = j2*R2 + s
    mask_r = r < R1
    mask_c = c < Q2 * R2
    acc = tl.zeros((BLOCK_R1, BLOCK_C), dtype=ACC_DTYPE)
    for k in range(start, end):
        u = tl.load(order_ptr + k)
        i1 = tl.load(uniq_i1_ptr + u)
        for j1 in range(Q1):
            a = tl.load(g1_ptr + (i1 * Q1 + j1) * R1 + r, mask=mask_r, other=0.0).to(ACC_DTYPE)
            # dT12[u, j1*q2 + j2, s] is dT12 flat at (u*q1 + j1)*q2*R2 + c.
            dt = tl.load(dt12_ptr + (u * Q1 + j1) * (Q2 * R2) + c, mask=mask_c, other=0.0)
            acc += a[:, None] * dt[None, :]
    _store_slice(dg2t_ptr, partial_ptr, tl.load(dest_ptr + pid), r[:, None] * (Q2 * R2)
                 + c[None, :], acc, mask_r[:, None] & mask_c[None, :], R1 * Q2 * R2, ATOMIC)


@triton.jit
def _tt_grad_core1_kernel(
    dt12_ptr, g2_ptr, uniq_i2_ptr, order_ptr, start_ptr, end_ptr, dest_ptr, dg1_ptr,
    partial_ptr, P2, Q1, Q2, R1, R2,
    ACC_DTYPE: tl.constexpr, ATOMIC: tl.constexpr, BLOCK_Q1: tl.constexpr,
    BLOCK_R1: tl.constexpr, BLOCK_R2: tl.constexpr,
):
    # Over a chunk of unique prefixes u sharing one digit i1: dG1[0, i1] (q1, R1) += sum over j2
    # of dT12[u, j1*q2 + j2, :] (q1, R2) times G2[:, i2(u), j2, :]^T (R2, R1).
    pid = tl.program_id(0)
    start = tl.load(start_ptr + pid)
    end = tl.load(end_ptr + pid)
    j1 = tl.arange(0, BLOCK_Q1)
    r = tl.arange(0, BLOCK_R1)
    s = tl.arange(0, BLOCK_R2)
    mask_j = j1 < Q1
    mask_r = r < R1
    mask_s = s < R2
    acc = tl.zeros((BLOCK_Q1, BLOCK_R1, BLOCK_R2), dtype=ACC_DTYPE)  # summed over s at the end
    for k in range(start, end):
        u = tl.load(order_ptr + k)
        i2 = tl.load(uniq_i2_ptr + u)
        for j2 in range(Q2):
            dt = tl.load(dt12_ptr + ((u * Q1 + j1[:, None]) * Q2 + j2) * R2 + s[None, :],
                         mask=mask_j[:, None] & mask_s[None, :], other=0.0)
            g = tl.load(g2_ptr + ((r[:, None] * P2 + i2) * Q2 + j2) * R2 + s[None, :],
                        mask=mask_r[:, None] & mask_s[None, :], other=0.0).to(ACC_DTYPE)
            acc += dt[:, None, :] * g[None, :, :]
    _store_slice(dg1_ptr, partial_ptr, tl.load(dest_ptr + pid), j1[:, None] * R1 + r[None, :],
                 tl.sum(acc, axis=2), mask_j[:, None] & mask_r[None, :], Q1 * R1, ATOMIC)


def _interpreted() -> bool:
    """Whether these kernels and triton.language's own jit helpers (tl.zeros, tl.sum) were
    decorated in interpreter mode, i.e. TRITON_INTERPRET=1 was set before triton's import."""
    return isinstance(_tt_rows_kernel, InterpretedFunction) and isinstance(tl.sum,
                                                                          InterpretedFunction)


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def _tile_rows(per_row: int, cap: int) -> int:
    """Rows of a tile whose accumulator holds ``per_row`` values a row: fills ``_TILE``."""
    return max(1, min(cap, _TILE // per_row))


def _sort_key(keys: Tensor, bound: int) -> Tensor:
    """``keys`` (all < ``bound``) as int32 when they fit: a radix sort does half the passes."""
    return keys.to(torch.int32) if bound <= 2 ** 31 else keys


def _acc_dtype(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype]:
    """Accumulation dtype: fp32 for fp32/bf16 cores, fp64 for fp64 cores (gradcheck)."""
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


class _Runs(NamedTuple):
    """The runs of equal keys in a sorted key array of ``n`` items, found on the device without
    a host sync: arrays are padded to ``n`` runs (the real ones first, then zero-count runs).

    ``sizes`` holds ``[chunks, partial rows, split runs]`` as a device tensor, read on the host
    together with the other plans' (one sync for the whole backward).
    """

    keys: Tensor  # (n,) key of run r
    counts: Tensor  # (n,) items of run r; 0 for padding
    pieces: Tensor  # (n,) chunks of run r (runs longer than ``chunk`` are split)
    sizes: Tensor  # (3,) int64


def _runs(sorted_keys: Tensor, chunk: int, atomic: bool) -> _Runs:
    n = sorted_keys.numel()
    new_run = torch.ones(n, dtype=torch.bool, device=sorted_keys.device)
    new_run[1:] = sorted_keys[1:] != sorted_keys[:-1]
    run_of = new_run.cumsum(0) - 1  # (n,) run of each item
    # First and last position of each run, scattered by the items that start / end a run; the
    # other items write to a discarded slot n (no atomics: each run's slot has one writer).
    pos = torch.arange(n, device=sorted_keys.device)
    ends_run = torch.ones_like(new_run)
    ends_run[:-1] = new_run[1:]
    first = torch.zeros(n + 1, dtype=torch.int64, device=sorted_keys.device)
    first.scatter_(0, torch.where(new_run, run_of, n), pos)
    last = torch.full((n + 1,), -1, dtype=torch.int64, device=sorted_keys.device)
    last.scatter_(0, torch.where(ends_run, run_of, n), pos)
    counts = (last - first + 1)[:n]  # 0 for the padding runs (last -1, first 0)
    # Every item of a run writes the same key: the result does not depend on write order.
    keys = torch.zeros(n, dtype=torch.int64, device=sorted_keys.device)
    keys.scatter_(0, run_of, sorted_keys.long())
    pieces = (counts + chunk - 1) // chunk
    split = pieces > 1
    if atomic:  # no partial rows: every chunk adds into its slice
        split = torch.zeros_like(split)
    sizes = torch.stack([pieces.sum(), (pieces * split).sum(), split.sum()])
    return _Runs(keys, counts, pieces, sizes)


class _ChunkPlan(NamedTuple):
    """Programs of a segmented reduction over items sorted by the gradient slice they update.

    Chunk ``c`` covers sorted positions ``start[c]:end[c]`` (at most ``chunk`` items, one slice)
    and writes slice ``dest[c]`` if ``dest[c] >= 0``, else row ``-dest[c]-1`` of a partial
    buffer; slice ``sum_key[s]`` is then the ordered sum of partial rows
    ``sum_start[s]:sum_end[s]`` of ``num_partial``. In atomic mode every chunk adds into
    ``dest[c]`` directly.
    """

    start: Tensor
    end: Tensor
    dest: Tensor
    sum_start: Tensor
    sum_end: Tensor
    sum_key: Tensor
    num_partial: int


def _chunk_plan(runs: _Runs, chunk: int, num_chunks: int, num_partial: int,
                num_split: int) -> _ChunkPlan:
    """Split the runs into chunks of at most ``chunk`` items, given the sizes read from
    ``runs.sizes`` (so that no step here waits for the device)."""
    device = runs.counts.device
    run_end = runs.counts.cumsum(0)
    # Chunk -> run; output_size spares repeat_interleave its own host sync.
    run = torch.repeat_interleave(torch.arange(runs.counts.numel(), device=device), runs.pieces,
                                  output_size=num_chunks)
    first_chunk = runs.pieces.cumsum(0) - runs.pieces
    start = run_end[run] - runs.counts[run] + (
        torch.arange(num_chunks, device=device) - first_chunk[run]) * chunk
    end = torch.minimum(start + chunk, run_end[run])
    if not num_partial:
        empty = runs.keys[:0]
        return _ChunkPlan(start, end, runs.keys[run], empty, empty, empty, 0)
    # Chunks of split runs get consecutive partial rows, in order, so each run's partials are a
    # contiguous range. The split runs, in order: a stable sort puts them first.
    split = runs.pieces > 1
    chunk_split = split[run]
    partial_row = chunk_split.cumsum(0) - 1
    dest = torch.where(chunk_split, -partial_row - 1, runs.keys[run])
    split_runs = torch.sort(split.to(torch.uint8), descending=True, stable=True)[1][:num_split]
    split_pieces = runs.pieces[split_runs]
    sum_end = split_pieces.cumsum(0)
    return _ChunkPlan(start, end, dest, sum_end - split_pieces, sum_end, runs.keys[split_runs],
                      num_partial)


def _chunk_plans(jobs: Sequence[tuple[Tensor, int]], atomic: bool) -> list[_ChunkPlan]:
    """Plans of several segmented reductions ``(sorted_keys, chunk)``, with one host sync."""
    runs = [_runs(keys, chunk, atomic) for keys, chunk in jobs]
    sizes = torch.stack([r.sizes for r in runs]).tolist() if runs else []
    return [_chunk_plan(r, chunk, *size) for r, (_, chunk), size in zip(runs, jobs, sizes)]


def _segmented(kernel, lead: Sequence[Tensor], order: Tensor, plan: _ChunkPlan, atomic: bool,
               out: Tensor, scalars: Sequence[int], **meta) -> None:
    """Run the segmented-reduction ``kernel`` over items ``order`` (sorted by slice) into
    ``out`` (num_slices, slice_size), zero-initialized, then sum split slices."""
    slice_size = out.shape[1]
    # A one-row buffer stands in when nothing is split (its stores are all masked off).
    partial = torch.empty(max(plan.num_partial, 1), slice_size, dtype=out.dtype,
                          device=out.device)
    kernel[(plan.start.numel(),)](*lead, order, plan.start, plan.end, plan.dest, out, partial,
                                  *scalars, ATOMIC=atomic, **meta)
    if plan.num_partial:
        block = min(_pow2(slice_size), 1024)
        _segment_sum_kernel[(plan.sum_key.numel(), triton.cdiv(slice_size, block))](
            partial, plan.sum_start, plan.sum_end, plan.sum_key, out, slice_size, BLOCK=block)


class TTLookupTritonFunction(torch.autograd.Function):
    """Autograd glue: forward by prefix reuse, backward by segmented reductions (d = 3)."""

    @staticmethod
    def forward(ctx, indices: Tensor, deterministic: bool, p_shapes: tuple[int, int, int],
                q_shapes: tuple[int, int, int], g1: Tensor, g2: Tensor, g3: Tensor) -> Tensor:
        (_, p2, p3), (q1, q2, q3) = p_shapes, q_shapes
        r1, r2 = g2.shape[0], g2.shape[3]
        acc_torch, acc_tl = _acc_dtype(g1.dtype)
        batch, dim = indices.numel(), q1 * q2 * q3
        out = torch.empty(batch, dim, dtype=g1.dtype, device=g1.device)
        i3 = indices % p3
        prefix = indices // p3  # i1*p2 + i2
        # Sorting by prefix gives the unique prefixes, the row order of the row kernel and,
        # kept for backward, that of the segmented dT12 reduction. 32-bit keys halve the radix
        # sort's passes.
        sorted_prefix, perm = torch.sort(_sort_key(prefix, p_shapes[0] * p2), stable=True)
        uniq, inv_sorted = torch.unique_consecutive(sorted_prefix, return_inverse=True)
        uniq = uniq.long()
        inv = torch.empty_like(inv_sorted)
        inv[perm] = inv_sorted  # inv[b]: unique-prefix index of row b
        uniq_i1, uniq_i2 = uniq // p2, uniq % p2
        t12 = torch.empty(uniq.numel(), q1 * q2, r2, dtype=acc_torch, device=g1.device)
        if batch:
            _tt_prefix_kernel[(uniq.numel(),)](
                g1, g2, uniq_i1, uniq_i2, t12, p2, q1, q2, r1, r2,
                ACC_DTYPE=acc_tl, BLOCK_Q12=_pow2(q1 * q2), BLOCK_R2=_pow2(r2))
            block_q3 = _pow2(q3)
            block_q12 = min(_pow2(q1 * q2), max(_TILE // block_q3, 1))
            block_b = _tile_rows(block_q12 * block_q3, _MAX_BLOCK_ROWS)
            grid = (triton.cdiv(batch, block_b), triton.cdiv(q1 * q2, block_q12))
            _tt_rows_kernel[grid](
                t12, g3, perm, inv_sorted, i3, out, batch, p3, q1 * q2, q3, r2,
                ACC_DTYPE=acc_tl, BLOCK_B=block_b, BLOCK_Q12=block_q12, BLOCK_Q3=block_q3)
        ctx.save_for_backward(g1, g2, g3, t12, perm, inv_sorted, inv, i3, uniq_i1, uniq_i2)
        ctx.deterministic = deterministic
        ctx.p_shapes, ctx.q_shapes = p_shapes, q_shapes
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        g1, g2, g3, t12, perm, inv_sorted, inv, i3, uniq_i1, uniq_i2 = ctx.saved_tensors
        (p1, p2, p3), (q1, q2, q3) = ctx.p_shapes, ctx.q_shapes
        r1, r2 = g2.shape[0], g2.shape[3]
        acc_torch, acc_tl = _acc_dtype(g1.dtype)
        dout = dout.contiguous()
        batch, dim, q12 = inv.numel(), q1 * q2 * q3, q1 * q2
        atomic = not ctx.deterministic
        device = g1.device
        # Gradients accumulate in the acc dtype, each slice contiguous; untouched slices stay 0.
        dg1 = torch.zeros(p1, q1 * r1, dtype=acc_torch, device=device)  # G1 (1, p1, q1, R1)
        dg2t = torch.zeros(p2, r1 * q2 * r2, dtype=acc_torch, device=device)  # (p2, R1, q2, R2)
        dg3t = torch.zeros(p3, r2 * q3, dtype=acc_torch, device=device)  # (p3, R2, q3)
        if batch:
            # Each gradient slice is reduced over the items that update it, sorted by slice:
            # dT12 over rows by prefix (perm), dG3 over rows by i3, dG2 over unique prefixes
            # by i2, dG1 over unique prefixes by i1 (already sorted: prefixes are (i1, i2)).
            sorted_i3, order3 = torch.sort(_sort_key(i3, p3), stable=True)
            sorted_i2, order2 = torch.sort(_sort_key(uniq_i2, p2), stable=True)
            order1 = torch.arange(uniq_i1.numel(), device=device)
            plan_t12, plan3, plan2, plan1 = _chunk_plans(
                [(inv_sorted, _CHUNK_ROWS), (sorted_i3, _CHUNK_ROWS),
                 (sorted_i2, _CHUNK_PREFIXES), (uniq_i1, _CHUNK_PREFIXES)], atomic)
            dt12 = torch.zeros(t12.shape[0], q12 * r2, dtype=acc_torch, device=device)
            block_q12, block_r1, block_r2 = _pow2(q12), _pow2(r1), _pow2(r2)
            _segmented(_tt_grad_t12_kernel, (dout, g3, i3), perm, plan_t12, atomic, dt12,
                       (p3, q12, q3, r2, dim), ACC_DTYPE=acc_tl,
                       BLOCK_B=_tile_rows(block_q12 * block_r2, _BLOCK_SEG),
                       BLOCK_Q12=block_q12, BLOCK_R2=block_r2)
            _segmented(_tt_grad_core3_kernel, (dout, t12, inv), order3, plan3, atomic, dg3t,
                       (q12, q3, r2, dim), ACC_DTYPE=acc_tl,
                       BLOCK_B=_tile_rows(block_r2 * _pow2(q3), _BLOCK_SEG),
                       BLOCK_R2=block_r2, BLOCK_Q3=_pow2(q3))
            _segmented(_tt_grad_core2_kernel, (dt12, g1, uniq_i1), order2, plan2, atomic, dg2t,
                       (q1, q2, r1, r2), ACC_DTYPE=acc_tl, BLOCK_R1=block_r1,
                       BLOCK_C=_pow2(q2 * r2))
            tile1 = _pow2(q1) * block_r1 * block_r2
            _segmented(_tt_grad_core1_kernel, (dt12, g2, uniq_i2), order1, plan1, atomic, dg1,
                       (p2, q1, q2, r1, r2), ACC_DTYPE=acc_tl, BLOCK_Q1=_pow2(q1),
                       BLOCK_R1=block_r1, BLOCK_R2=block_r2, num_warps=8 if tile1 > _TILE else 4)
        grads = (dg1.view(g1.shape), dg2t.view(p2, r1, q2, r2).permute(1, 0, 2, 3),
                 dg3t.view(p3, r2, q3).permute(1, 0, 2).unsqueeze(-1))
        return (None, None, None, None,
                *(g.to(core.dtype).contiguous() for g, core in zip(grads, (g1, g2, g3))))


def _check_inputs(indices: Tensor, cores: Sequence[Tensor], tt_p_shapes: Sequence[int],
                  tt_q_shapes: Sequence[int]) -> None:
    d = len(cores)
    if d < 2:
        raise ValueError(f"cores: need at least 2 TT cores, got {d}")
    if len(tt_p_shapes) != d or len(tt_q_shapes) != d:
        raise ValueError(f"tt_p_shapes={list(tt_p_shapes)} and tt_q_shapes={list(tt_q_shapes)} "
                         f"must both have one entry per core ({d} cores)")
    dtype, device = cores[0].dtype, cores[0].device
    if dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"cores: dtype {dtype} is not supported; use one of "
                         f"{[str(t) for t in _SUPPORTED_DTYPES]}")
    prev_rank = 1  # R_0
    for k, (core, p, q) in enumerate(zip(cores, tt_p_shapes, tt_q_shapes)):
        if core.dtype != dtype or core.device != device:
            raise ValueError(f"cores[{k}]: dtype {core.dtype} on {core.device} differs from "
                             f"cores[0] ({dtype} on {device})")
        last = k == d - 1
        if (core.dim() != 4 or tuple(core.shape[:3]) != (prev_rank, p, q)
                or (last and core.shape[3] != 1)):
            expected = (prev_rank, p, q, 1 if last else f"R_{k + 1}")
            raise ValueError(f"cores[{k}]: shape {tuple(core.shape)} does not match "
                             f"(R_{k}, p_{k + 1}, q_{k + 1}, R_{k + 1}) = {expected}")
        prev_rank = core.shape[3]
    if indices.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"indices: dtype {indices.dtype} is not an integer index type "
                         "(use torch.int64 or torch.int32)")
    if indices.dim() != 1:
        raise ValueError(f"indices: expected a 1-D tensor, got shape {tuple(indices.shape)}")
    if indices.device != device:
        raise ValueError(f"indices: device {indices.device} differs from the cores' device "
                         f"{device}")
    num_rows = math.prod(tt_p_shapes)
    if indices.numel():
        lo, hi = (int(v) for v in torch.aminmax(indices))  # one host sync for both bounds
        if lo < 0 or hi >= num_rows:
            bad = lo if lo < 0 else hi
            raise ValueError(f"indices: id {bad} is out of range [0, {num_rows}) for "
                             f"tt_p_shapes={list(tt_p_shapes)}")


def tt_lookup_triton(indices: Tensor, cores: Sequence[Tensor], tt_p_shapes: Sequence[int],
                     tt_q_shapes: Sequence[int], deterministic: bool = True) -> Tensor:
    r"""Rows ``indices`` of the TT-matrix table given by ``cores``, by fused Triton kernels.

    Differentiable w.r.t. the cores. Three cores run the Triton kernels; other core counts fall
    back to :func:`kernels.tt_lookup_torch.tt_lookup_torch` with a one-time warning. All inputs
    are checked before any launch, so a bad id raises instead of reading out of bounds.

    Args:
        indices (torch.Tensor): row ids, int64 or int32, in ``[0, prod(tt_p_shapes))``.
        cores (Sequence[torch.Tensor]): core ``k`` shaped ``(R_{k-1}, p_k, q_k, R_k)`` with
            ``R_0 = R_d = 1``; float32, bfloat16 or float64 (accumulation is fp32, fp64 for
            float64), all on one device. The output has their dtype.
        tt_p_shapes (Sequence[int]): row factors ``p``; row ``i = (i1*p2 + i2)*p3 + i3``.
        tt_q_shapes (Sequence[int]): column factors ``q``; column ``j = (j1*q2 + j2)*q3 + j3``.
        deterministic (bool, optional): if ``False``, the backward splits long segments over
            several programs combined with atomic adds: faster on skewed ids but not bitwise
            reproducible. (default: ``True``)

    Shapes:
        - **indices:** ``[B]``
        - **output:** ``[B, D]`` with ``D = prod(tt_q_shapes)``

    Raises:
        ValueError: bad shapes, dtypes, devices or an id out of range.
        RuntimeError: CPU tensors while Triton is not in interpreter mode.
    """
    _check_inputs(indices, cores, tt_p_shapes, tt_q_shapes)
    if len(cores) != 3:
        if len(cores) not in _warned_fallback:
            _warned_fallback.add(len(cores))
            warnings.warn(f"tt_lookup_triton: Triton kernels cover 3 cores, got {len(cores)}; "
                          "using the torch path", stacklevel=2)
        # Imported here: only the fallback needs the torch path.
        from kernels.tt_lookup_torch import tt_lookup_torch
        return tt_lookup_torch(indices.long(), cores, tt_p_shapes, tt_q_shapes)
    if indices.device.type == "cpu" and not (knobs.runtime.interpret and _interpreted()):
        raise RuntimeError("tt_lookup_triton: CPU tensors need the Triton interpreter: set "
                           "TRITON_INTERPRET=1 before triton is first imported (torch_geometric "
                           "imports it), move the cores to CUDA, or use backend='torch'")
    g1, g2, g3 = (core.contiguous() for core in cores)
    return TTLookupTritonFunction.apply(indices.contiguous().long(), bool(deterministic),
                                        tuple(int(p) for p in tt_p_shapes),
                                        tuple(int(q) for q in tt_q_shapes), g1, g2, g3)
