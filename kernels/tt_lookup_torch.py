r"""Pure-torch TT-matrix row lookup: the CPU path and the test oracle of the Triton kernel.

A table ``W`` of ``N <= prod(p)`` rows and ``D = prod(q)`` columns is held as cores
``G_k`` of shape ``(R_{k-1}, p_k, q_k, R_k)`` with ``R_0 = R_d = 1``. Row ``i`` has digits
``(i_1, ..., i_d)`` (``i_1`` most significant) and, with column ``j = (j_1 q_2 + j_2) q_3 + j_3``,

.. math::
    W[i, j] = G_1[0, i_1, j_1, :] \, G_2[:, i_2, j_2, :] \cdots G_d[:, i_d, j_d, 0].

The lookup walks a tree: level ``k`` holds the distinct prefixes ``(i_1..i_k)`` of the batch
(the last level holds every row), and the partial product of a node,
``T_k = T_{k-1}[parent] x G_k[:, i_k]`` shaped ``(Q_k = q_1..q_k, R_k)``, is computed once per
distinct prefix. Rows are sorted once, so the children of a node are contiguous; they are cut
into *pieces* of at most ``_PIECE`` children (fewer where nodes have few children), and one
``bmm`` per level multiplies the parent's
``(Q_{k-1}, R_{k-1})`` matrix by the piece's ``(R_{k-1}, piece * q_k R_k)`` block. That turns
millions of tiny per-row products into few, wider ones, and the parent matrix is read once per
piece instead of once per row. Where the children fill most digits of their parents and the
parents are narrow (level 2 of uniform ids), a *dense* level instead multiplies every parent by
every digit in one matmul, with no gathered slices and no sums in its backward. The backward
pass is the same walk in reverse (two ``bmm`` per level) with sums per parent and per digit
done by ``scatter_add_`` on CPU (deterministic) or ``index_put_(accumulate=True)`` elsewhere
(sort-based on CUDA, hence deterministic too). Sorted rows are processed in chunks whose
buffers are reused from chunk to chunk, and only the sort and the chunks' plans (a few int64
per row) are kept for the backward pass (the partial products are recomputed), so memory stays
bounded for batches of millions of ids.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from gnn_tt.common.checks import check_positive_int

# Most children of one node multiplied by a single (parent x piece) product, a power of two.
# A level takes the piece size that minimises its slots (children plus padding) plus
# _PIECE_COST slots per piece, the bmm's overhead per matrix measured on products at rank 16
# (uniform ids: ~17 rows per prefix -> 8, not 16 and its ~45% padding; local ids: ~65
# rows per prefix -> 16; ~1 row per papers100M prefix -> 2).
_PIECE = 16
_PIECE_COST = 2
# Sorted rows handled per chunk: bounds the per-chunk buffers (partial products of up to
# chunk prefixes, ~chunk * Q R * 4 bytes per level) to tens of MB whatever the batch size.
DEFAULT_CHUNK_SIZE = 1 << 14


def tt_digits(indices: Tensor, tt_p_shapes: Sequence[int]) -> list[Tensor]:
    r"""Mixed-radix digits of row ids, first core most significant.

    Args:
        indices (torch.Tensor): int64 row ids in ``[0, prod(tt_p_shapes))``.
        tt_p_shapes (Sequence[int]): row factors ``(p_1, ..., p_d)``.

    Shapes:
        - **input:** ``indices`` :math:`(B)`
        - **output:** ``d`` int64 tensors :math:`(B)`, ``i = (i_1 p_2 + i_2) p_3 + i_3``.
    """
    digits = []
    rest = indices.long()
    for p in reversed(list(tt_p_shapes)):
        digits.append(rest % p)
        rest = rest // p
    return digits[::-1]


def tt_full_weight(cores: Sequence[Tensor], num_rows: int | None = None) -> Tensor:
    r"""Dense table reconstructed from the cores with plain differentiable ops (the oracle).

    Args:
        cores (Sequence[torch.Tensor]): core ``k`` shaped ``(R_{k-1}, p_k, q_k, R_k)``.
        num_rows (int, optional): keep the first ``num_rows`` rows of the ``prod(p)`` grid.
            (default: :obj:`None`, all of them)

    Shapes:
        - **output:** :math:`(num\_rows, \prod_k q_k)`
    """
    # full: (P_k, Q_k, R_k) with P_k = p_1..p_k and Q_k = q_1..q_k, rows and columns in
    # most-significant-first order.
    full = cores[0][0]  # (p_1, q_1, R_1)
    for core in cores[1:]:
        r_in, p, q, r_out = core.shape
        # (P, Q, r_in) x (r_in, p, q, r_out) -> (P, p, Q, q, r_out): row P p + i_k, col Q q + j_k
        full = torch.einsum("aQr,rpqs->apQqs", full, core)
        full = full.reshape(full.shape[0] * p, full.shape[2] * q, r_out)
    weight = full[..., 0]
    return weight if num_rows is None else weight[:num_rows]


def _index_sum_(out: Tensor, index: Tensor, src: Tensor) -> Tensor:
    """``out[index[n]] += src[n]`` along dim 0, deterministically on every device."""
    if out.device.type == "cpu":
        # scatter_add_ with an index expanded along the rows takes torch's sort-based CPU path
        # (stable sort, then in-order sums: deterministic), ~100x faster here than index_add_
        flat_src = src.reshape(src.shape[0], -1)
        expanded = index[:, None].expand(-1, flat_src.shape[1])
        out.view(out.shape[0], -1).scatter_add_(0, expanded, flat_src)
        return out
    return out.index_put_((index,), src, accumulate=True)  # sort-based on CUDA, no atomics


@dataclass
class _Level:
    """Children of one tree level in slots. Pieces: each parent's children cut into pieces of
    ``size`` slots (S = P * size), multiplied per piece. Dense (``piece_parent`` None): every
    digit of every parent has a slot (S = U * p, slot ``parent * p + digit``), all multiplied
    by one matmul. ``flat``: (C,) child's slot; ``slot_child``: (S,) child in each slot, 0 in
    empty ones; ``empty``: (E,) the empty slots; pieces only: ``slot_digit`` (S,) digit in each
    slot, ``p`` (an all-zero padding slice) in empty ones, and ``piece_parent`` (P,) each
    piece's parent node."""

    flat: Tensor
    slot_child: Tensor
    empty: Tensor
    slot_digit: Tensor | None
    piece_parent: Tensor | None


def _make_level(counts: Tensor, digit: Tensor, core_shape: Sequence[int], q_in: int,
                distinct: bool) -> _Level:
    """Plan one level from ``counts`` (U,) children per parent; children sorted by parent.
    ``core_shape``: (R_in, p, q, R_out); ``q_in``: columns of a parent; ``distinct``: no two
    children share a parent and digit (true but at the last level, which holds duplicates)."""
    device = digit.device
    r_in, radix = core_shape[0], core_shape[1]
    num_parents = counts.numel()
    parents = torch.arange(num_parents, device=device)
    parent = torch.repeat_interleave(parents, counts)  # (C,)
    options = []  # (cost, size, pieces per parent (U,), slots) per size 1, 2, 4, .., _PIECE
    for size in (1 << e for e in range(_PIECE.bit_length())):
        pieces = torch.div(counts + size - 1, size, rounding_mode="floor")
        num_pieces = int(pieces.sum())
        options.append((num_pieces * (size + _PIECE_COST), size, pieces, num_pieces * size))
    _, size, pieces, num_slots = min(options, key=lambda option: option[0])
    # dense when its matmul output (U p slots of q R_out Q_in) is smaller than the pieces'
    # gathered slices (S slots of q R_out R_in): well-filled levels with narrow parents, e.g.
    # level 2 of uniform ids (~130 of 140 digits per parent, Q_in = q_1 = 4)
    dense = distinct and num_parents * radix * q_in <= num_slots * r_in
    slot_digit = piece_parent = None
    if dense:
        num_slots = num_parents * radix
        flat = parent * radix + digit
    else:
        first_child = torch.cumsum(counts, 0) - counts  # (U,)
        pos = torch.arange(digit.numel(), device=device) - first_child[parent]
        first_piece = torch.cumsum(pieces, 0) - pieces
        flat = first_piece[parent] * size + pos  # slots of a parent's pieces are consecutive
        piece_parent = torch.repeat_interleave(parents, pieces)  # (P,)
        slot_digit = torch.full((num_slots,), radix, dtype=torch.long, device=device)
        slot_digit[flat] = digit
    slot_child = torch.zeros(num_slots, dtype=torch.long, device=device)
    slot_child[flat] = torch.arange(digit.numel(), device=device)
    filled = torch.zeros(num_slots, dtype=torch.bool, device=device)
    filled[flat] = True
    empty = torch.nonzero(~filled).view(-1)
    return _Level(flat, slot_child, empty, slot_digit, piece_parent)


def _plan(sorted_ids: Tensor, core_shapes: Sequence[Sequence[int]]) -> list[_Level]:
    """Tree levels of a sorted chunk: level k < d holds the distinct prefixes (i_1..i_k),
    level d every row (duplicates included). ``core_shapes``: (R_in, p, q, R_out) per core."""
    levels = []
    tt_p_shapes = [shape[1] for shape in core_shapes]
    suffix = math.prod(tt_p_shapes)
    q_in = 1
    prev_first = torch.zeros(1, dtype=torch.long, device=sorted_ids.device)  # the root's row
    for k, shape in enumerate(core_shapes):
        radix = shape[1]
        suffix //= radix
        prefix = torch.div(sorted_ids, suffix, rounding_mode="floor")  # (C,) number of i_1..i_k
        last = k == len(core_shapes) - 1
        if not last:
            nodes, counts = torch.unique_consecutive(prefix, return_counts=True)
            first = torch.cumsum(counts, 0) - counts  # (U_k,) first row of each node
        else:
            nodes, first = prefix, torch.arange(prefix.numel(), device=prefix.device)
        # children per parent: how many level-k nodes start inside each parent's rows
        parent_of_node = torch.searchsorted(prev_first, first, right=True) - 1
        counts = torch.bincount(parent_of_node, minlength=prev_first.numel())
        levels.append(_make_level(counts, nodes % radix, shape, q_in, distinct=not last))
        prev_first = first
        q_in *= shape[2]
    return levels


# Internal layout: the partial product of a level-k node is stored transposed, (R_k, Q_k),
# its columns in the API order (j_1 most significant). A piece product holds its children as
# (q_k, R_k, Q_{k-1}) slabs; one gather per level picks the children's slabs and moves q_k
# last, so the last level's rows come out in the API order.

def _slices_t(core: Tensor) -> Tensor:
    """(R_in, p, q, R_out) -> (p + 1, q R_out, R_in): per digit G[:, i]^T, plus a zero slice."""
    r_in, p, q, r_out = core.shape
    rows = core.permute(1, 2, 3, 0).reshape(p, q * r_out, r_in)
    return torch.cat([rows, rows.new_zeros(1, q * r_out, r_in)])


class _Workspace:
    """What one level reuses across the chunks of a forward or backward call: its core, the
    core's slices (:func:`_slices_t`) and buffers. Fresh temporaries of a few MB per chunk go
    back to the OS when freed and fault back in on the next chunk: without reuse the page
    faults cost about as much as the arithmetic."""

    def __init__(self, core: Tensor) -> None:
        self.core = core.contiguous()  # dense levels view it as (R_in, p q R_out)
        self.slices = _slices_t(core)  # (p + 1, q R_out, R_in)
        self.buffers: dict[str, Tensor] = {}

    def take(self, name: str, *shape: int) -> Tensor:
        """An uninitialised ``shape`` tensor; the previous one of ``name`` is overwritten."""
        numel = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < numel:
            # chunks differ a little in size: a margin saves regrowing on each larger one
            buf = self.buffers[name] = self.core.new_empty(numel + numel // 4)
        return buf[:numel].view(shape)


def _level_forward(parent: Tensor, level: _Level, ws: _Workspace) -> Tensor:
    """Children (C, R_out, Q_in q) from parents (U, R_in, Q_in)."""
    r_in, p, q, r_out = ws.core.shape
    num_parents, _, q_in = parent.shape
    slots = level.slot_child.numel()
    if level.piece_parent is None:
        # (Q_in U, R_in) x (R_in, p q R_out) -> (Q_in, U p, q, R_out): slot (u, i) of every u
        parents = ws.take("parents", q_in, num_parents, r_in).copy_(parent.permute(2, 0, 1))
        prod = torch.mm(parents.view(-1, r_in), ws.core.view(r_in, -1),
                        out=ws.take("prod", q_in * num_parents, p * q * r_out))
        slot_view = prod.view(q_in, slots, q, r_out).permute(1, 3, 0, 2)  # (S, R_out, Q_in, q)
    else:
        num_pieces = level.piece_parent.numel()
        slices = torch.index_select(ws.slices, 0, level.slot_digit,
                                    out=ws.take("slices", slots, q * r_out, r_in))
        parents = torch.index_select(parent, 0, level.piece_parent,
                                     out=ws.take("parents", num_pieces, r_in, q_in))
        # (P, piece qR, R_in) x (P, R_in, Q_in) -> (P, piece qR, Q_in): a (q, R, Q_in) slab a slot
        prod = torch.bmm(slices.view(num_pieces, -1, r_in), parents,
                         out=ws.take("prod", num_pieces, slots // num_pieces * q * r_out, q_in))
        slot_view = prod.view(slots, q, r_out, q_in).permute(0, 2, 3, 1)  # (S, R_out, Q_in, q)
    # one gather picks the children and moves q last
    child = torch.index_select(slot_view, 0, level.flat,
                               out=ws.take("child", level.flat.numel(), r_out, q_in, q))
    return child.view(-1, r_out, q_in * q)


def _level_backward(parent: Tensor, level: _Level, grad_child: Tensor, need_parent: bool,
                    ws: _Workspace) -> tuple[Tensor | None, Tensor]:
    """Given dL/d children (C, R_out, Q_in q): dL/d parents (U, R_in, Q_in) and dL/d core."""
    r_in, p, q, r_out = ws.core.shape
    num_parents, _, q_in = parent.shape
    slots = level.slot_child.numel()
    grad_child = grad_child.view(grad_child.shape[0], r_out, q_in, q)
    # dL/d slot products; zeros in empty slots: a dense slot's product is computed anyway and
    # a piece's empty slot meets the zero padding slice, where 0 * garbage could be NaN
    if level.piece_parent is None:
        grad_prod = torch.index_select(grad_child.permute(2, 0, 3, 1), 1, level.slot_child,
                                       out=ws.take("grad_prod", q_in, slots, q, r_out))
        grad_prod = grad_prod.index_fill_(1, level.empty, 0).view(q_in * num_parents, -1)
        parents = ws.take("parents", q_in, num_parents, r_in).copy_(parent.permute(2, 0, 1))
        # (R_in, Q_in U) x (Q_in U, p q R_out) and (Q_in U, p q R_out) x (p q R_out, R_in)
        grad_core = torch.mm(parents.view(-1, r_in).t(), grad_prod).view(r_in, p, q, r_out)
        if not need_parent:
            return None, grad_core
        grad_parents = torch.mm(grad_prod, ws.core.view(r_in, -1).t())  # (Q_in U, R_in)
        grad_parent = ws.take("grad_parent", num_parents, r_in, q_in)
        grad_parent.copy_(grad_parents.view(q_in, num_parents, r_in).permute(1, 2, 0))
        return grad_parent, grad_core
    num_pieces = level.piece_parent.numel()
    grad_prod = torch.index_select(grad_child.permute(0, 3, 1, 2), 0, level.slot_child,
                                   out=ws.take("grad_prod", slots, q, r_out, q_in))
    grad_prod = grad_prod.index_fill_(0, level.empty, 0).view(num_pieces, -1, q_in)
    parents = torch.index_select(parent, 0, level.piece_parent,
                                 out=ws.take("parents", num_pieces, r_in, q_in))
    # d slices: (P, piece qR, Q_in) x (P, Q_in, R_in); empty slots land on the padding digit p
    grad_slices = torch.bmm(grad_prod, parents.transpose(1, 2),
                            out=ws.take("grad_slices", num_pieces, slots // num_pieces * q * r_out,
                                        r_in))
    grad_rows = _index_sum_(ws.core.new_zeros(p + 1, q * r_out, r_in), level.slot_digit,
                            grad_slices.view(slots, q * r_out, r_in))
    grad_core = grad_rows[:p].view(p, q, r_out, r_in).permute(3, 0, 1, 2)
    if not need_parent:
        return None, grad_core
    # d parents: (P, R_in, piece qR) x (P, piece qR, Q_in), summed over each parent's pieces
    slices = torch.index_select(ws.slices, 0, level.slot_digit,
                                out=ws.take("slices", slots, q * r_out, r_in))
    grad_pieces = torch.bmm(slices.view(num_pieces, -1, r_in).transpose(1, 2), grad_prod,
                            out=ws.take("grad_pieces", num_pieces, r_in, q_in))
    grad_parent = _index_sum_(ws.take("grad_parent", num_parents, r_in, q_in).zero_(),
                              level.piece_parent, grad_pieces)
    return grad_parent, grad_core


def _partials(levels: list[_Level], workspaces: list[_Workspace]) -> list[Tensor]:
    """Partial products of the levels, root first: [(1, 1, 1), (U_1, R_1, q_1), ...]."""
    parts = [workspaces[0].core.new_ones(1, 1, 1)]  # root: empty prefix, R_0 = 1
    for level, ws in zip(levels, workspaces):
        parts.append(_level_forward(parts[-1], level, ws))
    return parts


class TTLookupFunction(torch.autograd.Function):
    """Rows of a TT table with the hand-written backward described in the module docstring."""

    @staticmethod
    def forward(ctx: Any, indices: Tensor, tt_q_shapes: tuple[int, ...], chunk_size: int,
                *cores: Tensor) -> Tensor:
        sorted_ids, order = torch.sort(indices, stable=True)  # (B,), (B,)
        out = cores[0].new_empty(indices.numel(), math.prod(tt_q_shapes))
        workspaces = [_Workspace(core) for core in cores]
        plans = []
        for start in range(0, indices.numel(), chunk_size):
            plans.append(_plan(sorted_ids[start:start + chunk_size],
                               [core.shape for core in cores]))
            rows = _partials(plans[-1], workspaces)[-1]  # (C, 1, D)
            out.index_copy_(0, order[start:start + chunk_size], rows.view(rows.shape[0], -1))
        # the plans (a few int64 per row) are kept; the partial products are recomputed
        ctx.save_for_backward(order, *cores)
        ctx.plans, ctx.chunk_size = plans, chunk_size
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        order, *cores = ctx.saved_tensors
        grads = [torch.zeros_like(core) for core in cores]
        workspaces = [_Workspace(core) for core in cores]
        for n, levels in enumerate(ctx.plans):
            start = n * ctx.chunk_size
            # the last level's output is not needed
            parts = _partials(levels[:-1], workspaces)
            rows = order[start:start + ctx.chunk_size]
            grad = torch.index_select(grad_out, 0, rows,
                                      out=workspaces[-1].take("upstream", rows.numel(),
                                                              grad_out.shape[1]))
            for k in range(len(cores) - 1, -1, -1):
                grad, grad_core = _level_backward(parts[k], levels[k], grad, k > 0, workspaces[k])
                grads[k] += grad_core
        return (None, None, None, *grads)


def tt_lookup_torch(indices: Tensor, cores: Sequence[Tensor], tt_p_shapes: Sequence[int],
                    tt_q_shapes: Sequence[int], *,
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    r"""Rows ``W[indices]`` of the TT table, differentiable w.r.t. the cores.

    Args:
        indices (torch.Tensor): int64 row ids, already checked to lie in ``[0, prod(p))``.
        cores (Sequence[torch.Tensor]): ``d`` cores, core ``k`` shaped
            ``(R_{k-1}, tt_p_shapes[k], tt_q_shapes[k], R_k)``, one dtype and device.
        tt_p_shapes (Sequence[int]): row factors ``p``.
        tt_q_shapes (Sequence[int]): column factors ``q``; ``D = prod(q)``.
        chunk_size (int, optional): sorted rows processed at once; bounds the working memory.
            (default: ``16384``)

    Shapes:
        - **input:** ``indices`` :math:`(B)`
        - **output:** :math:`(B, D)`, column ``j = (j_1 q_2 + j_2) q_3 + j_3``.
    """
    if not (len(cores) == len(tt_p_shapes) == len(tt_q_shapes)):
        raise ValueError(f"tt_lookup_torch: got {len(cores)} cores, tt_p_shapes={list(tt_p_shapes)}"
                         f" and tt_q_shapes={list(tt_q_shapes)}; need one p and q per core")
    for k, (core, p, q) in enumerate(zip(cores, tt_p_shapes, tt_q_shapes)):
        if core.dim() != 4 or core.shape[1] != p or core.shape[2] != q:
            raise ValueError(f"tt_lookup_torch: cores[{k}] has shape {tuple(core.shape)}, "
                             f"expected (R_in, {p}, {q}, R_out)")
    check_positive_int("chunk_size", chunk_size, "tt_lookup_torch")
    return TTLookupFunction.apply(indices.reshape(-1).long(), tuple(int(q) for q in tt_q_shapes),
                                  int(chunk_size), *cores)
