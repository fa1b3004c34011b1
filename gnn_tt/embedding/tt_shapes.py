"""TT shapes: the policy that chooses the row and column factors of a table, the balanced
factorizations behind it, and validation of shapes and ranks."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Cores of a table when neither its row nor its column factors are given.
DEFAULT_NUM_CORES = 3

# Round-up search: the largest factor may be at most this many times the smallest, and among
# products within _SLACK of n the most balanced factors win (balanced cores, small padding).
_MAX_IMBALANCE = 2.0
_SLACK = 0.01


def _divisors(n: int) -> list[int]:
    small = [f for f in range(1, math.isqrt(n) + 1) if n % f == 0]
    return sorted(set(small + [n // f for f in small]))


def _exact_factors(n: int, d: int) -> list[int]:
    """Nondecreasing ``d`` factors with product exactly ``n`` and the smallest
    largest/smallest ratio (ties: the lexicographically largest, i.e. the larger first factor)."""
    divisors = _divisors(n)
    best: tuple[float, list[int]] | None = None

    def search(prefix: list[int], rest: int) -> None:
        nonlocal best
        left = d - len(prefix)
        if left == 1:
            if not prefix or rest >= prefix[-1]:
                factors = prefix + [rest]
                key = (factors[-1] / factors[0], [-f for f in factors])
                if best is None or key < (best[0], [-f for f in best[1]]):
                    best = (key[0], factors)
            return
        for f in divisors:
            if f > rest ** (1.0 / left) + 1e-9:  # a larger one forces a smaller later factor
                break
            if rest % f == 0 and (not prefix or f >= prefix[-1]):
                search(prefix + [f], rest // f)

    search([], n)
    assert best is not None  # [1, ..., 1, n] always qualifies
    return best[1]


def _rounded_factors(n: int, d: int) -> list[int] | None:
    """Nondecreasing ``d`` factors with product ``>= n`` and largest/smallest ratio
    ``<= _MAX_IMBALANCE``: the most balanced with product ``<= (1 + _SLACK) n``, else the
    smallest product; None if no factors qualify."""
    root = n ** (1.0 / d)
    best: tuple[bool, float, int, list[int]] | None = None

    def search(prefix: list[int], prod: int) -> None:
        nonlocal best
        left = d - len(prefix)
        if left == 1:
            last = -(-n // prod)  # ceil
            first = prefix[0] if prefix else last
            if last >= (prefix[-1] if prefix else 1) and last <= _MAX_IMBALANCE * first:
                total = prod * last
                key = (total > (1 + _SLACK) * n, last / first if total <= (1 + _SLACK) * n
                       else 0.0, total)
                if best is None or key < best[:3]:
                    best = (*key, prefix + [last])
            return
        lo = max(prefix[-1] if prefix else math.ceil(root / _MAX_IMBALANCE), 1)
        # a factor above the geometric mean of what is left would force a smaller later one
        hi = math.ceil((n / prod) ** (1.0 / left))
        for f in range(lo, hi + 1):
            search(prefix + [f], prod * f)

    search([], 1)
    return None if best is None else best[3]


def suggest_tt_shapes(n: int, d: int = DEFAULT_NUM_CORES, allow_round_up: bool = True) -> list[int]:
    r"""Balanced factors of ``n`` for ``d`` TT cores, smallest first.

    With ``allow_round_up=True`` (rows) the product may exceed ``n`` a little: among factors
    within 2x of each other, the most balanced ones whose product is within 1% above ``n``,
    else the smallest product ``>= n`` (exact factors when ``n`` is too small for any).
    With ``allow_round_up=False`` (columns) the product is exactly ``n``.

    Args:
        n (int): number of rows (or columns), ``>= 1``.
        d (int, optional): number of cores, ``>= 1``. (default: ``3``)
        allow_round_up (bool, optional): allow a product above ``n``. (default: :obj:`True`)

    Example::

        >>> suggest_tt_shapes(2_449_029)          # ogbn-products rows, 0.46% padding
        [135, 135, 135]
        >>> suggest_tt_shapes(100, allow_round_up=False)
        [4, 5, 5]
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"suggest_tt_shapes: n must be a positive int, got n={n!r}")
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"suggest_tt_shapes: d must be a positive int, got d={d!r}")
    if allow_round_up:
        rounded = _rounded_factors(n, d)
        if rounded is not None:
            return rounded
    return _exact_factors(n, d)


def balanced_factors(n: int, k: int) -> tuple[int, ...]:
    """The ``k`` most balanced positive integers (largest first) whose product is >= ``n``:
    with ``j`` factors to go, the next is the ceiling of the ``j``-th root of what is left to
    cover, so the product is tight (the largest factor one smaller would fall short of ``n``)."""
    factors = []
    for left in range(k, 0, -1):
        f = max(1, math.ceil(round(n ** (1.0 / left), 9)))
        factors.append(f)
        n = math.ceil(n / f)
    return tuple(sorted(factors, reverse=True))


@dataclass(frozen=True)
class TTShapePolicy:
    r"""How the row factors of a TT table are chosen when the caller gives none.

    The grid gets at least ``ceil(row_slack * num_embeddings)`` rows, factored by
    :meth:`row_shapes`. Rows beyond ``num_embeddings`` are padding that is never looked up;
    a layout that places nodes by graph partition needs some, because its parts do not come
    out exactly as large as the slices of the grid they fill. The named instances are
    :data:`TIGHT_ROWS` and :data:`PARTITION_ROWS`.

    Args:
        row_slack (float, optional): rows per embedding to provide, ``>= 1``.
            (default: ``1.0``)
    """

    row_slack: float = 1.0

    def __post_init__(self) -> None:
        if not self.row_slack >= 1.0:
            raise ValueError(f"'{self.__class__.__name__}': row_slack must be >= 1, got "
                             f"{self.row_slack!r}")

    def row_shapes(self, num_embeddings: int, num_cores: int = DEFAULT_NUM_CORES,
                   top_parts: int | None = None) -> tuple[int, ...]:
        r"""Row factors :math:`(p_1, \dots, p_d)` for ``num_embeddings`` rows.

        Args:
            num_embeddings (int): rows the table must hold, ``>= 1``.
            num_cores (int, optional): ``d``. (default: ``3``)
            top_parts (int, optional): fix ``p_1``, the number of top-level parts of a
                hierarchical layout, in ``[1, num_embeddings]``; the other ``d - 1`` factors
                are the :func:`balanced_factors` of the capacity
                ``ceil(row_slack * num_embeddings / p_1)`` each top-level part needs.
                (default: :obj:`None`, all ``d`` factors from :func:`suggest_tt_shapes` of
                ``ceil(row_slack * num_embeddings)``, smallest first)

        Example::

            >>> PARTITION_ROWS.row_shapes(2_449_029, top_parts=125)
            (125, 144, 143)
        """
        if top_parts is None:
            return tuple(suggest_tt_shapes(math.ceil(num_embeddings * self.row_slack),
                                           num_cores))
        name = self.__class__.__name__
        if not 1 <= top_parts <= num_embeddings:
            raise ValueError(f"'{name}': top_parts must be in [1, num_embeddings="
                             f"{num_embeddings}], got {top_parts}")
        if num_cores < 2:
            raise ValueError(f"'{name}': top_parts needs num_cores >= 2, got {num_cores}")
        capacity = math.ceil(self.row_slack * num_embeddings / top_parts)
        return (top_parts, *balanced_factors(capacity, num_cores - 1))


# No spare rows beyond what the factorization rounds up: for tables whose rows are not laid
# out by a partition.
TIGHT_ROWS = TTShapePolicy(row_slack=1.0)
# 5% spare rows, so that the parts of a graph partition, which METIS balances only
# approximately, fit the slices of the grid they are laid out in.
PARTITION_ROWS = TTShapePolicy(row_slack=1.05)


def choose_tt_shapes(num_embeddings: int, embedding_dim: int,
                     policy: TTShapePolicy = TIGHT_ROWS, num_cores: int = DEFAULT_NUM_CORES,
                     p_shapes: Sequence[int] | None = None,
                     q_shapes: Sequence[int] | None = None
                     ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    r"""The row and column factors of a table: the given ones, the others chosen.

    The number of cores ``d`` is the length of ``p_shapes``, else of ``q_shapes``, else
    ``num_cores``. Missing row factors come from ``policy.row_shapes``; missing column factors
    are the exact balanced factors of ``embedding_dim`` (:func:`suggest_tt_shapes` without
    round-up). Given factors are returned as they are: :func:`check_tt_shapes` validates them.

    Args:
        num_embeddings (int): rows of the table.
        embedding_dim (int): columns of the table.
        policy (TTShapePolicy, optional): chooses the row factors.
            (default: :data:`TIGHT_ROWS`)
        num_cores (int, optional): ``d`` when no factors are given. (default: ``3``)
        p_shapes (Sequence[int], optional): row factors. (default: :obj:`None`)
        q_shapes (Sequence[int], optional): column factors. (default: :obj:`None`)

    Returns:
        ``(p_shapes, q_shapes)`` as tuples.

    Example::

        >>> choose_tt_shapes(2_449_029, 100, PARTITION_ROWS)
        ((137, 137, 138), (4, 5, 5))
    """
    d = len(p_shapes) if p_shapes is not None else (
        len(q_shapes) if q_shapes is not None else num_cores)
    p = tuple(p_shapes) if p_shapes is not None else policy.row_shapes(num_embeddings, d)
    q = tuple(q_shapes) if q_shapes is not None else tuple(
        suggest_tt_shapes(embedding_dim, d, allow_round_up=False))
    return p, q


def check_tt_shapes(num_embeddings: int, embedding_dim: int, tt_p_shapes: Sequence[int],
                    tt_q_shapes: Sequence[int]) -> None:
    """Raise ``ValueError`` naming the argument unless the shapes describe the table:
    equal lengths in 2..4, positive factors, ``prod(p) >= num_embeddings``,
    ``prod(q) == embedding_dim``."""
    p, q = list(tt_p_shapes), list(tt_q_shapes)
    if len(p) != len(q):
        raise ValueError(f"tt_p_shapes={p} and tt_q_shapes={q} must have the same length")
    if not 2 <= len(p) <= 4:
        raise ValueError(f"tt_p_shapes={p}: need 2, 3 or 4 cores, got {len(p)}")
    for name, shape in (("tt_p_shapes", p), ("tt_q_shapes", q)):
        if any(not isinstance(f, int) or f < 1 for f in shape):
            raise ValueError(f"{name}={shape}: every factor must be a positive int")
    if math.prod(p) < num_embeddings:
        raise ValueError(f"tt_p_shapes={p}: product {math.prod(p)} < "
                         f"num_embeddings={num_embeddings}")
    if math.prod(q) != embedding_dim:
        raise ValueError(f"tt_q_shapes={q}: product {math.prod(q)} != "
                         f"embedding_dim={embedding_dim}")


def normalize_tt_ranks(tt_ranks: int | Sequence[int], d: int) -> list[int]:
    """The ``d - 1`` inner ranks from an int (same rank everywhere) or a list; raises
    ``ValueError`` naming ``tt_ranks`` on a wrong length or a rank < 1."""
    ranks = [tt_ranks] * (d - 1) if isinstance(tt_ranks, int) else list(tt_ranks)
    if len(ranks) != d - 1:
        raise ValueError(f"tt_ranks={tt_ranks!r}: need {d - 1} inner ranks for {d} cores, "
                         f"got {len(ranks)}")
    if any(not isinstance(r, int) or r < 1 for r in ranks):
        raise ValueError(f"tt_ranks={tt_ranks!r}: every rank must be a positive int")
    return ranks
