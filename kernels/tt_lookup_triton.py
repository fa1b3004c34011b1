r"""Fused Triton kernels for the TT-matrix embedding lookup (d = 3) and its core gradients.

Row ``i`` of the table has digits ``(i1, i2, i3)`` with ``i = (i1*p2 + i2)*p3 + i3`` and, seen as
a ``(q1, q2, q3)`` tensor, ``W[i, (j1, j2, j3)] = G1[0, i1, j1, :] . G2[:, i2, j2, :] .
G3[:, i3, j3, 0]`` (docs/design.md, section 1). A batch of ``B`` ids is computed in two launches:

1. ``_tt_prefix_kernel``: one program per unique prefix ``u = (i1, i2)`` forms
   ``T12[u] = G1[i1] x G2[i2]``, a ``(q1*q2, R2)`` matrix, once for all rows sharing it.
2. ``_tt_rows_kernel``: rows taken in prefix order; for the rows of one prefix ``u``,
   ``out[b] = T12[u] x G3[i3[b]]`` for up to 16 rows at once is one small GEMM with ``T12[u]``
   loaded once, accumulated in fp32 (fp64 for fp64 cores) and written in the output dtype.

The backward never holds a per-row ``R x R`` tensor; every core gradient is a segmented
reduction over rows (or unique prefixes) sorted by the slice they update:

- ``_tt_grad_t12_kernel``: ``dT12[u] = sum_{b: inv[b]=u} dout[b] G3[i3[b]]^T`` (rows by prefix),
- ``_tt_grad_core3_kernel``: ``dG3[i3] = sum_{b: i3[b]=i3} T12[inv[b]]^T dout[b]`` (rows by i3),
- ``_tt_grad_core2_kernel`` / ``_tt_grad_core1_kernel``: ``dG2[i2]``, ``dG1[i1]`` from ``dT12``
  (unique prefixes by i2 / by i1).

Each program of a reduction takes a fixed chunk of ``_CHUNK_ROWS`` sorted rows
(``_CHUNK_PREFIXES`` prefixes) and walks the runs of one slice inside it, so a long run (skewed
ids, one hot digit) is spread over many programs and the launch sizes depend only on the
batch: nothing is planned per run. With ``deterministic=True`` (default) a run cut by a chunk
edge leaves a partial sum per chunk that ``_segment_fixup_kernel`` adds in chunk order: results
are bitwise reproducible. ``deterministic=False`` lets those partials ``tl.atomic_add`` into
the slice instead: one pass less and no partial buffer, but the order of float additions (so
the last bits) varies run to run.

The host waits for the device once per call, in the forward: it needs the number of unique
prefixes to size the prefix launch, and reads the id range in the same transfer when the ids
are to be checked (``check_range``). The backward is launched without a sync.

Products: where rows share an operand (the rows kernel and dT12: one ``T12[u]`` or ``dT12[u]``
per run) they are GEMMs by ``tl.dot`` with ``input_precision="tf32x3"`` (three tf32 tensor-core
products: about fp32 accuracy); block dimensions are padded to ``tl.dot``'s minimum of 16 and
masked. dG3, dG2 and dG1 read a different slice per item, so no operand is shared across a
GEMM's rows: they use rank-1 updates of a register tile (broadcast multiply-add, summed across
items once per run). The per-kernel timings behind each form are in docs/benchmarks.md. fp64
(gradcheck) forms the products as broadcast sums: Triton 3.6 does not compile an fp64
``tl.dot`` for the H100. Non-power-of-2 sizes are padded to the next power of 2 and masked.

Triton kernels run on CUDA tensors; CPU tensors need ``TRITON_INTERPRET=1`` set before triton is
first imported: the interpreter is chosen when each ``@triton.jit`` function is decorated, and
that includes triton.language's own helpers such as ``tl.sum``.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import triton
import triton.language as tl
from triton import knobs
from triton.runtime.interpreter import InterpretedFunction
from torch import Tensor

_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float64)
# Values of a rank-1-update accumulator tile (rows x slice): 4096 fp32 are 32 registers a
# thread at 4 warps. Its row count is the largest power of 2 that fits, at most _MAX_TILE_ROWS.
_TILE = 4096
_MAX_TILE_ROWS = 32
# tl.dot's smallest block dimension, and the most rows of one prefix per GEMM of the row kernel.
_DOT_MIN = 16
_MAX_GEMM_ROWS = 16
# Sorted items (rows; unique prefixes) per program of the row kernel and of the backward
# reductions: longer runs of one slice span several programs (reductions recombine them: ordered
# sum, or atomics).
_CHUNK_ROWS = 256
_CHUNK_PREFIXES = 16
_warned_fallback: set[int] = set()


@triton.jit
def _tt_prefix_kernel(
    g1_ptr, g2_ptr, uniq_ptr, t12_ptr,
    P2, Q1, Q2, R1, R2,
    ACC_DTYPE: tl.constexpr, BLOCK_Q12: tl.constexpr, BLOCK_R2: tl.constexpr,
):
    # One unique prefix u = i1*p2 + i2 per program:
    # T12[u] (q1*q2, R2) = sum_r G1[0, i1, j1, r] G2[r, i2, j2, :].
    u = tl.program_id(0).to(tl.int64)
    prefix = tl.load(uniq_ptr + u)
    i1 = prefix // P2
    i2 = prefix % P2
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
def _mma(a, b, acc, PREC: tl.constexpr):
    # acc + a @ b. fp32 by tl.dot with PREC "tf32x3" (tensor cores, about fp32 accuracy). fp64
    # ("ieee": the gradcheck dtype) as a broadcast product summed over k: Triton 3.6 does not
    # compile an fp64 tl.dot for the H100.
    if PREC == "ieee":
        return acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    else:
        return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def _run_rows(keys_ptr, order_ptr, idx_ptr, key, end, hi, kb, kj, P3):
    # The GEMM columns k of the next step of a run: sorted position end + kb[k] while it is in
    # the chunk and in the run of key (take), its row id and its digit i3, and how many rows
    # that is (each row has one column with kj == 0).
    kpos = end + kb
    take = (kpos < hi) & (tl.load(keys_ptr + kpos, mask=kpos < hi, other=-1) == key)
    rows = tl.load(order_ptr + kpos, mask=take, other=0)
    i3 = tl.load(idx_ptr + rows, mask=take, other=0) % P3
    return take, rows, i3, tl.sum((take & (kj == 0)).to(tl.int32), axis=0)


@triton.jit
def _tt_rows_kernel(
    t12_ptr, g3_ptr, idx_ptr, order_ptr, keys_ptr, out_ptr,
    n, P3, Q12, Q3, R2, D,
    ACC_DTYPE: tl.constexpr, PREC: tl.constexpr, CHUNK: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_Q12: tl.constexpr, BLOCK_R2: tl.constexpr, BLOCK_Q3: tl.constexpr,
):
    # Rows in prefix order (order[k] is the k-th, keys[k] its unique-prefix index u); program
    # c takes sorted positions [c*CHUNK, (c+1)*CHUNK) and walks its runs of one u. For BLOCK_B
    # rows b of u at a time: out[b] viewed (q12, q3) for all of them at once is one GEMM,
    # T12[u] (q12, R2) @ [G3[:, i3[b], :] for each b] (R2, BLOCK_B*q3), with T12[u] loaded
    # once per run. The GEMM's column k is (row kb = k // BLOCK_Q3, digit kj = k % BLOCK_Q3).
    chunk = tl.program_id(0)
    lo = chunk.to(tl.int64) * CHUNK
    hi = tl.minimum(lo + CHUNK, n)
    m = tl.arange(0, BLOCK_Q12)  # m = j1*q2 + j2
    s = tl.arange(0, BLOCK_R2)
    k = tl.arange(0, BLOCK_B * BLOCK_Q3)
    kb = k // BLOCK_Q3
    kj = k % BLOCK_Q3
    mask_m = m < Q12
    mask_s = s < R2
    pos = lo
    while pos < hi:
        key = tl.load(keys_ptr + pos)
        # T12[u, m, s] sits at (u*q12 + m)*R2 + s.
        t = tl.load(t12_ptr + (key.to(tl.int64) * Q12 + m[:, None]) * R2 + s[None, :],
                    mask=mask_m[:, None] & mask_s[None, :], other=0.0)
        end = pos
        go = pos < hi
        while go:  # BLOCK_B rows a step until the key changes or the chunk ends
            take, rows, i3, count = _run_rows(keys_ptr, order_ptr, idx_ptr, key, end, hi, kb, kj,
                                              P3)
            valid = take & (kj < Q3)
            # G3[s, i3, j3, 0] sits at (s*p3 + i3)*q3 + j3.
            g = tl.load(g3_ptr + (s[:, None] * P3 + i3[None, :]) * Q3 + kj[None, :],
                        mask=mask_s[:, None] & valid[None, :], other=0.0).to(ACC_DTYPE)
            o = _mma(t, g, tl.zeros((BLOCK_Q12, BLOCK_B * BLOCK_Q3), ACC_DTYPE), PREC)
            tl.store(out_ptr + rows[None, :] * D + m[:, None] * Q3 + kj[None, :],
                     o.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & valid[None, :])
            end += count
            go = count == BLOCK_B
        pos = end


# The four core-gradient kernels are segmented reductions over n items (rows, or unique
# prefixes) sorted by the gradient slice they update (keys[k]: slice of the k-th item). Program
# c takes the fixed chunk of sorted positions [c*CHUNK, (c+1)*CHUNK) and walks its segments
# (runs of one key), so no per-segment plan is built on the host or the device. A segment
# wholly inside the chunk is summed and stored into its slice. A segment cut by the chunk's
# edge is stored as a partial: in slot 2c ("head") if it began in an earlier chunk, else in
# slot 2c + 1 ("tail"); _segment_fixup_kernel then adds, in chunk order, the tail of the chunk
# where it begins and the heads of the chunks it runs into (deterministic). With ATOMIC the
# partials tl.atomic_add into the slice instead (no second pass; float order not fixed).


@triton.jit
def _segment_split(keys_ptr, key, seg_start, seg_end, lo, hi, n):
    # Whether the segment [seg_start, seg_end) of key, inside chunk [lo, hi), goes on before lo
    # or after hi. Indices are clamped rather than masked (scalar masks trip the interpreter).
    before = (seg_start == lo) & (lo > 0) & (tl.load(keys_ptr + tl.maximum(lo - 1, 0)) == key)
    after = (seg_end == hi) & (hi < n) & (tl.load(keys_ptr + tl.minimum(hi, n - 1)) == key)
    return before, after


@triton.jit
def _store_segment(out_ptr, part_ptr, key, chunk, before, after, local, acc, mask, SLICE,
                   ATOMIC: tl.constexpr):
    # One segment's sum (SLICE values at offsets local) into slice key of out, or as a partial.
    # The scalar flags are broadcast to the tile first: the interpreter cannot mask with a
    # scalar bool.
    zero = tl.zeros(local.shape, tl.int32)
    split = (zero + (before | after).to(tl.int32)) != 0
    tl.store(out_ptr + key.to(tl.int64) * SLICE + local, acc, mask=mask & ~split)
    if ATOMIC:
        tl.atomic_add(out_ptr + key.to(tl.int64) * SLICE + local, acc, mask=mask & split)
    else:
        slot = 2 * chunk.to(tl.int64) + 1 - before.to(tl.int64)
        tl.store(part_ptr + slot * SLICE + local, acc, mask=mask & split)


@triton.jit
def _segment_fixup_kernel(keys_ptr, part_ptr, out_ptr, n, SLICE, CHUNK: tl.constexpr,
                          BLOCK: tl.constexpr):
    # Program c finishes the segment that leaves chunk c at its end, if it began in chunk c:
    # out[key] = tail[c] + head[c + 1] + head[c + 2] + ... in that order.
    chunk = tl.program_id(0).to(tl.int64)
    lo = chunk * CHUNK
    hi = tl.minimum(lo + CHUNK, n)
    key = tl.load(keys_ptr + hi - 1)
    goes_on = (hi < n) & (tl.load(keys_ptr + tl.minimum(hi, n - 1)) == key)
    came_in = (lo > 0) & (tl.load(keys_ptr + lo) == key) & (
        tl.load(keys_ptr + tl.maximum(lo - 1, 0)) == key)
    if goes_on & ~came_in:
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < SLICE
        acc = tl.load(part_ptr + (2 * chunk + 1) * SLICE + cols, mask=mask, other=0.0)
        nxt = hi  # first position of the next chunk, which the segment enters
        go = goes_on
        while go:
            acc += tl.load(part_ptr + 2 * (nxt // CHUNK) * SLICE + cols, mask=mask, other=0.0)
            nxt += CHUNK
            go = (nxt < n) & (tl.load(keys_ptr + tl.minimum(nxt, n - 1)) == key)
        tl.store(out_ptr + key.to(tl.int64) * SLICE + cols, acc, mask=mask)


@triton.jit
def _tt_grad_t12_kernel(
    dout_ptr, g3_ptr, idx_ptr, order_ptr, keys_ptr, dt12_ptr, part_ptr,
    n, P3, Q12, Q3, R2, D,
    ACC_DTYPE: tl.constexpr, PREC: tl.constexpr, ATOMIC: tl.constexpr, CHUNK: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_Q12: tl.constexpr, BLOCK_R2: tl.constexpr,
    BLOCK_Q3: tl.constexpr,
):
    # Rows in prefix order, keys = their unique-prefix index u. Per segment (rows b of one u):
    # dT12[u] (q12, R2) = sum_b dout[b] viewed (q12, q3) @ G3[:, i3[b], :, 0]^T (q3, R2), for
    # BLOCK_B rows at a time one GEMM over k = (row kb, digit kj), accumulated across steps.
    chunk = tl.program_id(0)
    lo = chunk.to(tl.int64) * CHUNK
    hi = tl.minimum(lo + CHUNK, n)
    m = tl.arange(0, BLOCK_Q12)
    s = tl.arange(0, BLOCK_R2)
    k = tl.arange(0, BLOCK_B * BLOCK_Q3)
    kb = k // BLOCK_Q3
    kj = k % BLOCK_Q3
    mask_m = m < Q12
    mask_s = s < R2
    pos = lo
    while pos < hi:
        key = tl.load(keys_ptr + pos)
        acc = tl.zeros((BLOCK_Q12, BLOCK_R2), dtype=ACC_DTYPE)
        end = pos
        go = pos < hi
        while go:
            take, rows, i3, count = _run_rows(keys_ptr, order_ptr, idx_ptr, key, end, hi, kb, kj,
                                              P3)
            valid = take & (kj < Q3)
            a = tl.load(dout_ptr + rows[None, :] * D + m[:, None] * Q3 + kj[None, :],
                        mask=mask_m[:, None] & valid[None, :], other=0.0).to(ACC_DTYPE)
            b = tl.load(g3_ptr + (s[None, :] * P3 + i3[:, None]) * Q3 + kj[:, None],
                        mask=valid[:, None] & mask_s[None, :], other=0.0).to(ACC_DTYPE)
            acc = _mma(a, b, acc, PREC)
            end += count
            go = count == BLOCK_B
        before, after = _segment_split(keys_ptr, key, pos, end, lo, hi, n)
        _store_segment(dt12_ptr, part_ptr, key, chunk, before, after,
                       m[:, None] * R2 + s[None, :], acc, mask_m[:, None] & mask_s[None, :],
                       Q12 * R2, ATOMIC)
        pos = end


@triton.jit
def _tt_grad_core3_kernel(
    dout_ptr, t12_ptr, inv_ptr, order_ptr, keys_ptr, dg3t_ptr, part_ptr,
    n, Q12, Q3, R2, D,
    ACC_DTYPE: tl.constexpr, ATOMIC: tl.constexpr, CHUNK: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_R2: tl.constexpr, BLOCK_Q3: tl.constexpr,
):
    # Rows in i3 order, keys = i3. Per segment: dG3t[i3] (R2, q3) = sum_b T12[inv[b]]^T
    # (R2, q12) times dout[b] viewed (q12, q3). dG3t is G3's gradient laid out (p3, R2, q3).
    chunk = tl.program_id(0)
    lo = chunk.to(tl.int64) * CHUNK
    hi = tl.minimum(lo + CHUNK, n)
    s = tl.arange(0, BLOCK_R2)
    j3 = tl.arange(0, BLOCK_Q3)
    mask_s = s < R2
    mask_j = j3 < Q3
    pos = lo
    while pos < hi:
        key = tl.load(keys_ptr + pos)
        acc = tl.zeros((BLOCK_B, BLOCK_R2, BLOCK_Q3), dtype=ACC_DTYPE)  # summed over rows last
        end = pos
        go = pos < hi
        while go:
            k = end + tl.arange(0, BLOCK_B)
            take = (k < hi) & (tl.load(keys_ptr + k, mask=k < hi, other=-1) == key)
            rows = tl.load(order_ptr + k, mask=take, other=0)
            inv = tl.load(inv_ptr + rows, mask=take, other=0).to(tl.int64)
            for j12 in range(Q12):
                t = tl.load(t12_ptr + (inv[:, None] * Q12 + j12) * R2 + s[None, :],
                            mask=take[:, None] & mask_s[None, :], other=0.0)
                d = tl.load(dout_ptr + rows[:, None] * D + j12 * Q3 + j3[None, :],
                            mask=take[:, None] & mask_j[None, :], other=0.0).to(ACC_DTYPE)
                acc += t[:, :, None] * d[:, None, :]
            count = tl.sum(take.to(tl.int32), axis=0)
            end += count
            go = count == BLOCK_B
        before, after = _segment_split(keys_ptr, key, pos, end, lo, hi, n)
        _store_segment(dg3t_ptr, part_ptr, key, chunk, before, after,
                       s[:, None] * Q3 + j3[None, :], tl.sum(acc, axis=0),
                       mask_s[:, None] & mask_j[None, :], R2 * Q3, ATOMIC)
        pos = end


@triton.jit
def _tt_grad_core2_kernel(
    dt12_ptr, g1_ptr, uniq_ptr, order_ptr, keys_ptr, dg2t_ptr, part_ptr,
    n, P2, Q1, Q2, R1, R2,
    ACC_DTYPE: tl.constexpr, ATOMIC: tl.constexpr, CHUNK: tl.constexpr,
    BLOCK_R1: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # Unique prefixes u in i2 order, keys = i2. Per segment: dG2t[i2] (R1, q2*R2) = sum over
    # its u and over j1 of G1[0, i1(u), j1, :]^T (R1, 1) times dT12[u, j1*q2:(j1+1)*q2, :]
    # viewed (1, q2*R2). dG2t is G2's gradient laid out (p2, R1, q2, R2).
    chunk = tl.program_id(0)
    lo = chunk.to(tl.int64) * CHUNK
    hi = tl.minimum(lo + CHUNK, n)
    r = tl.arange(0, BLOCK_R1)
    c = tl.arange(0, BLOCK_C)  # c = j2*R2 + s
    mask_r = r < R1
    mask_c = c < Q2 * R2
    pos = lo
    while pos < hi:
        key = tl.load(keys_ptr + pos)
        acc = tl.zeros((BLOCK_R1, BLOCK_C), dtype=ACC_DTYPE)
        end = pos
        go = pos < hi
        while go:  # one unique prefix a step
            u = tl.load(order_ptr + end).to(tl.int64)
            i1 = tl.load(uniq_ptr + u) // P2
            for j1 in range(Q1):
                a = tl.load(g1_ptr + (i1 * Q1 + j1) * R1 + r, mask=mask_r,
                            other=0.0).to(ACC_DTYPE)
                # dT12[u, j1*q2 + j2, s] is dT12 flat at (u*q1 + j1)*q2*R2 + c.
                dt = tl.load(dt12_ptr + (u * Q1 + j1) * (Q2 * R2) + c, mask=mask_c, other=0.0)
                acc += a[:, None] * dt[None, :]
            end += 1
            go = (end < hi) & (tl.load(keys_ptr + tl.minimum(end, hi - 1)) == key)
        before, after = _segment_split(keys_ptr, key, pos, end, lo, hi, n)
        _store_segment(dg2t_ptr, part_ptr, key, chunk, before, after,
                       r[:, None] * (Q2 * R2) + c[None, :], acc,
                       mask_r[:, None] & mask_c[None, :], R1 * Q2 * R2, ATOMIC)
        pos = end


@triton.jit
def _tt_grad_core1_kernel(
    dt12_ptr, g2_ptr, uniq_ptr, keys_ptr, dg1_ptr, part_ptr,
    n, P2, Q1, Q2, R1, R2,
    ACC_DTYPE: tl.constexpr, ATOMIC: tl.constexpr, CHUNK: tl.constexpr,
    BLOCK_Q1: tl.constexpr, BLOCK_R1: tl.constexpr, BLOCK_R2: tl.constexpr,
):
    # Unique prefixes u in their own order (sorted by (i1, i2)), keys = i1. Per segment:
    # dG1[0, i1] (q1, R1) = sum over its u and over j2 of dT12[u, j1*q2 + j2, :] (q1, R2)
    # times G2[:, i2(u), j2, :]^T (R2, R1).
    chunk = tl.program_id(0)
    lo = chunk.to(tl.int64) * CHUNK
    hi = tl.minimum(lo + CHUNK, n)
    j1 = tl.arange(0, BLOCK_Q1)
    r = tl.arange(0, BLOCK_R1)
    s = tl.arange(0, BLOCK_R2)
    mask_j = j1 < Q1
    mask_r = r < R1
    mask_s = s < R2
    pos = lo
    while pos < hi:
        key = tl.load(keys_ptr + pos)
        acc = tl.zeros((BLOCK_Q1, BLOCK_R1, BLOCK_R2), dtype=ACC_DTYPE)  # summed over s last
        end = pos
        go = pos < hi
        while go:
            u = end
            i2 = tl.load(uniq_ptr + u) % P2
            for j2 in range(Q2):
                dt = tl.load(dt12_ptr + ((u * Q1 + j1[:, None]) * Q2 + j2) * R2 + s[None, :],
                             mask=mask_j[:, None] & mask_s[None, :], other=0.0)
                g = tl.load(g2_ptr + ((r[:, None] * P2 + i2) * Q2 + j2) * R2 + s[None, :],
                            mask=mask_r[:, None] & mask_s[None, :], other=0.0).to(ACC_DTYPE)
                acc += dt[:, None, :] * g[None, :, :]
            end += 1
            go = (end < hi) & (tl.load(keys_ptr + tl.minimum(end, hi - 1)) == key)
        before, after = _segment_split(keys_ptr, key, pos, end, lo, hi, n)
        _store_segment(dg1_ptr, part_ptr, key, chunk, before, after,
                       j1[:, None] * R1 + r[None, :], tl.sum(acc, axis=2),
                       mask_j[:, None] & mask_r[None, :], Q1 * R1, ATOMIC)
        pos = end


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


def _dot_block(n: int) -> int:
    """Block size of a GEMM dimension of ``n``: a power of 2, at least ``tl.dot``'s minimum."""
    return max(_DOT_MIN, _pow2(n))


def _sort_key(keys: Tensor, bound: int) -> Tensor:
    """``keys`` (all < ``bound``) in the narrowest integer type that holds them: the radix sort
    does one pass per byte of key."""
    for dtype in (torch.int16, torch.int32):
        if bound <= torch.iinfo(dtype).max:
            return keys.to(dtype)
    return keys


def _acc_dtype(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype, str]:
    """Accumulation dtype (fp32 for fp32/bf16 cores, fp64 for fp64 cores: gradcheck) and the
    ``tl.dot`` precision: ``tf32x3`` (three tf32 tensor-core products, about fp32 accuracy) or
    exact ``ieee`` for fp64."""
    if dtype == torch.float64:
        return torch.float64, tl.float64, "ieee"
    return torch.float32, tl.float32, "tf32x3"


def _segmented(kernel, lead: Sequence[Tensor], keys: Tensor, chunk: int, atomic: bool,
               out: Tensor, scalars: Sequence[int], **meta) -> None:
    """Run the segmented-reduction ``kernel`` over the ``keys.numel()`` items sorted by
    ``keys`` into ``out`` (num_slices, slice_size), then finish slices cut by a chunk edge.

    ``out`` must be zero where no item writes. The launch sizes depend only on the item count,
    so nothing here waits for the device.
    """
    n, slice_size = keys.numel(), out.shape[1]
    num_chunks = triton.cdiv(n, chunk)
    split = not atomic and num_chunks > 1
    # Two partial rows per chunk (head, tail); a one-row stand-in when no segment can be cut
    # or atomics add the partials straight into out (its stores are all masked off).
    part = torch.empty(2 * num_chunks if split else 1, slice_size, dtype=out.dtype,
                       device=out.device)
    kernel[(num_chunks,)](*lead, keys, out, part, n, *scalars, ATOMIC=atomic, CHUNK=chunk,
                          **meta)
    if split:
        block = min(_pow2(slice_size), 1024)
        _segment_fixup_kernel[(num_chunks, triton.cdiv(slice_size, block))](
            keys, part, out, n, slice_size, CHUNK=chunk, BLOCK=block)


class TTLookupTritonFunction(torch.autograd.Function):
    """Autograd glue: forward by prefix reuse, backward by segmented reductions (d = 3).

    One host sync per call (the forward's unique-prefix count, with the id range in the same
    read when ``check_range``); the backward is launched without waiting for the device.
    """

    @staticmethod
    def forward(ctx, indices: Tensor, deterministic: bool, check_range: bool,
                p_shapes: tuple[int, int, int], q_shapes: tuple[int, int, int], g1: Tensor,
                g2: Tensor, g3: Tensor) -> Tensor:
        (p1, p2, p3), (q1, q2, q3) = p_shapes, q_shapes
        r1, r2 = g2.shape[0], g2.shape[3]
        acc_torch, acc_tl, precision = _acc_dtype(g1.dtype)
        batch, dim, device = indices.numel(), q1 * q2 * q3, g1.device
        out = torch.empty(batch, dim, dtype=g1.dtype, device=device)
        # Sorting by prefix i1*p2 + i2 gives the unique prefixes and the row order of the row
        # kernel and, kept for backward, of the segmented dT12 reduction.
        sorted_prefix, perm = torch.sort(_sort_key(indices // p3, p1 * p2), stable=True)
        new = torch.ones(batch, dtype=torch.bool, device=device)
        new[1:] = sorted_prefix[1:] != sorted_prefix[:-1]
        inv_sorted = new.cumsum(0, dtype=torch.int32) - 1  # unique index of the k-th row
        uniq = sorted_prefix[:0]
        if batch:
            # The one host read: the prefix count, plus the id range when it is checked, before
            # any kernel touches the cores (out-of-range ids have only sorted garbage so far).
            if check_range:
                lo, hi = torch.aminmax(indices)
                lo, hi, num_unique = torch.stack([lo, hi, inv_sorted[-1].long() + 1]).tolist()
                _check_range(lo, hi, p_shapes)
            else:
                num_unique = int(inv_sorted[-1]) + 1
            uniq = sorted_prefix.new_empty(num_unique)
            uniq[inv_sorted] = sorted_prefix  # each unique index gets its prefix (all equal)
        t12 = torch.empty(uniq.numel(), q1 * q2, r2, dtype=acc_torch, device=device)
        if batch:
            _tt_prefix_kernel[(uniq.numel(),)](
                g1, g2, uniq, t12, p2, q1, q2, r1, r2,
                ACC_DTYPE=acc_tl, BLOCK_Q12=_pow2(q1 * q2), BLOCK_R2=_pow2(r2))
            # Rows of one prefix per GEMM: the mean run (rows per prefix) rounded down to a
            # power of 2, at most _MAX_GEMM_ROWS, and enough to fill tl.dot's minimum width.
            block_q3 = _pow2(q3)
            mean_run = 1 << ((batch // uniq.numel()).bit_length() - 1)
            block_b = max(min(mean_run, _MAX_GEMM_ROWS), _DOT_MIN // block_q3, 1)
            _tt_rows_kernel[(triton.cdiv(batch, _CHUNK_ROWS),)](
                t12, g3, indices, perm, inv_sorted, out, batch, p3, q1 * q2, q3, r2, dim,
                ACC_DTYPE=acc_tl, PREC=precision, CHUNK=_CHUNK_ROWS, BLOCK_B=block_b,
                BLOCK_Q12=_dot_block(q1 * q2), BLOCK_R2=_dot_block(r2), BLOCK_Q3=block_q3)
        ctx.save_for_backward(indices, g1, g2, g3, t12, perm, inv_sorted, uniq)
        ctx.deterministic = deterministic
        ctx.p_shapes, ctx.q_shapes = p_shapes, q_shapes
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        indices, g1, g2, g3, t12, perm, inv_sorted, uniq = ctx.saved_tensors
        (p1, p2, p3), (q1, q2, q3) = ctx.p_shapes, ctx.q_shapes
        r1, r2 = g2.shape[0], g2.shape[3]
        acc_torch, acc_tl, precision = _acc_dtype(g1.dtype)
        dout = dout.contiguous()
        batch, dim, q12 = indices.numel(), q1 * q2 * q3, q1 * q2
        atomic = not ctx.deterministic
        device = g1.device
        # Gradients accumulate in the acc dtype, each slice contiguous; untouched slices stay 0.
        dg1 = torch.zeros(p1, q1 * r1, dtype=acc_torch, device=device)  # G1 (1, p1, q1, R1)
        dg2t = torch.zeros(p2, r1 * q2 * r2, dtype=acc_torch, device=device)  # (p2, R1, q2, R2)
        dg3t = torch.zeros(p3, r2 * q3, dtype=acc_torch, device=device)  # (p3, R2, q3)
        if batch:
            # Each gradient slice is reduced over the items that update it, sorted by slice:
            # dT12 over rows by prefix (perm, keys inv_sorted: launched first, as it needs no
            # new sort), dG3 over rows by i3, dG2 over unique prefixes by i2, dG1 over unique
            # prefixes by i1 (already in that order: prefixes are i1*p2 + i2, sorted).
            # Every unique prefix has a row, so every dT12 slice is written (atomics add into
            # it: zeros then).
            dt12 = (torch.zeros if atomic else torch.empty)(uniq.numel(), q12 * r2,
                                                            dtype=acc_torch, device=device)
            block_q3, block_r1, block_r2 = _pow2(q3), _pow2(r1), _pow2(r2)
            _segmented(_tt_grad_t12_kernel, (dout, g3, indices, perm), inv_sorted, _CHUNK_ROWS,
                       atomic, dt12, (p3, q12, q3, r2, dim), ACC_DTYPE=acc_tl, PREC=precision,
                       BLOCK_B=max(_DOT_MIN // block_q3, 1), BLOCK_Q12=_dot_block(q12),
                       BLOCK_R2=_dot_block(r2), BLOCK_Q3=block_q3)
            inv = torch.empty_like(inv_sorted)
            inv[perm] = inv_sorted  # inv[b]: unique-prefix index of row b
            sorted_i3, order3 = torch.sort(_sort_key(indices % p3, p3), stable=True)
            _segmented(_tt_grad_core3_kernel, (dout, t12, inv, order3), sorted_i3, _CHUNK_ROWS,
                       atomic, dg3t, (q12, q3, r2, dim), ACC_DTYPE=acc_tl,
                       BLOCK_B=_tile_rows(block_r2 * block_q3, _MAX_TILE_ROWS),
                       BLOCK_R2=block_r2, BLOCK_Q3=block_q3)
            sorted_i2, order2 = torch.sort(uniq % p2, stable=True)
            _segmented(_tt_grad_core2_kernel, (dt12, g1, uniq, order2), sorted_i2,
                       _CHUNK_PREFIXES, atomic, dg2t, (p2, q1, q2, r1, r2), ACC_DTYPE=acc_tl,
                       BLOCK_R1=block_r1, BLOCK_C=_pow2(q2 * r2))
            tile1 = _pow2(q1) * block_r1 * block_r2
            _segmented(_tt_grad_core1_kernel, (dt12, g2, uniq), uniq // p2, _CHUNK_PREFIXES,
                       atomic, dg1, (p2, q1, q2, r1, r2), ACC_DTYPE=acc_tl,
                       BLOCK_Q1=_pow2(q1), BLOCK_R1=block_r1, BLOCK_R2=block_r2,
                       num_warps=8 if tile1 > _TILE else 4)
        grads = (dg1.view(g1.shape), dg2t.view(p2, r1, q2, r2).permute(1, 0, 2, 3),
                 dg3t.view(p3, r2, q3).permute(1, 0, 2).unsqueeze(-1))
        return (None, None, None, None, None,
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
            raise ValueError(f"cores[{k}] (core {k + 1} of {d}): dtype {core.dtype} on "
                             f"{core.device} differs from cores[0] ({dtype} on {device})")
        last = k == d - 1
        if (core.dim() != 4 or tuple(core.shape[:3]) != (prev_rank, p, q)
                or (last and core.shape[3] != 1)):
            expected = (prev_rank, p, q, 1 if last else f"R_{k + 1}")
            raise ValueError(f"cores[{k}] (core {k + 1} of {d}): shape {tuple(core.shape)} does "
                             f"not match (R_{k}, p_{k + 1}, q_{k + 1}, R_{k + 1}) = {expected}")
        prev_rank = core.shape[3]
    if indices.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"indices: dtype {indices.dtype} is not an integer index type "
                         "(use torch.int64 or torch.int32)")
    if indices.dim() != 1:
        raise ValueError(f"indices: expected a 1-D tensor, got shape {tuple(indices.shape)}")
    if indices.device != device:
        raise ValueError(f"indices: device {indices.device} differs from the cores' device "
                         f"{device}")


def _check_range(lo: int, hi: int, tt_p_shapes: Sequence[int]) -> None:
    """Raise if the smallest / largest id ``lo`` / ``hi`` falls outside the table."""
    num_rows = math.prod(tt_p_shapes)
    if lo < 0 or hi >= num_rows:
        raise ValueError(f"indices: id {lo if lo < 0 else hi} is out of range [0, {num_rows}) "
                         f"for tt_p_shapes={list(tt_p_shapes)}")


def tt_lookup_triton(indices: Tensor, cores: Sequence[Tensor], tt_p_shapes: Sequence[int],
                     tt_q_shapes: Sequence[int], deterministic: bool = True,
                     check_range: bool = True) -> Tensor:
    r"""Rows ``indices`` of the TT-matrix table given by ``cores``, by fused Triton kernels.

    Differentiable w.r.t. the cores. Three cores run the Triton kernels; other core counts fall
    back to :func:`kernels.tt_lookup_torch.tt_lookup_torch` with a one-time warning. All inputs
    are checked before any kernel reads the cores, so a bad id raises instead of reading out of
    bounds; a caller that has already checked the ids passes ``check_range=False``.

    Args:
        indices (torch.Tensor): row ids, int64 or int32, in ``[0, prod(tt_p_shapes))``.
        cores (Sequence[torch.Tensor]): core ``k`` shaped ``(R_{k-1}, p_k, q_k, R_k)`` with
            ``R_0 = R_d = 1``; float32, bfloat16 or float64 (accumulation is fp32, fp64 for
            float64; float64 is for gradcheck, not speed), all on one device. The output has
            their dtype.
        tt_p_shapes (Sequence[int]): row factors ``p``; row ``i = (i1*p2 + i2)*p3 + i3``.
        tt_q_shapes (Sequence[int]): column factors ``q``; column ``j = (j1*q2 + j2)*q3 + j3``.
        deterministic (bool, optional): if ``False``, the partial sums of runs that span
            several backward programs are combined with atomic adds instead of an ordered
            second pass: one launch less per reduction, but not bitwise reproducible.
            (default: ``True``)
        check_range (bool, optional): check that every id lies in ``[0, prod(tt_p_shapes))``.
            Three cores read the range in the host sync the forward makes anyway; other core
            counts pay a sync for it. ``False`` trusts the caller: an id out of range is then
            undefined behaviour (out-of-bounds reads). (default: ``True``)

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
        if check_range and indices.numel():
            _check_range(*torch.stack(torch.aminmax(indices)).tolist(), tt_p_shapes)
        # Imported here: only the fallback needs the torch path.
        from kernels.tt_lookup_torch import tt_lookup_torch
        return tt_lookup_torch(indices.long(), cores, tt_p_shapes, tt_q_shapes)
    if indices.device.type == "cpu" and not (knobs.runtime.interpret and _interpreted()):
        raise RuntimeError("tt_lookup_triton: CPU tensors need the Triton interpreter: set "
                           "TRITON_INTERPRET=1 before triton is first imported (torch_geometric "
                           "imports it), move the cores to CUDA, or use backend='torch'")
    g1, g2, g3 = (core.contiguous() for core in cores)
    return TTLookupTritonFunction.apply(indices.contiguous().long(), bool(deterministic),
                                        bool(check_range), tuple(int(p) for p in tt_p_shapes),
                                        tuple(int(q) for q in tt_q_shapes), g1, g2, g3)
