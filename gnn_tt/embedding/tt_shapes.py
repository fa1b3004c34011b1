"""TT shape helpers: balanced factorizations of table sizes and validation of shapes/ranks."""
from __future__ import annotations

import math
from typing import Sequence

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


def suggest_tt_shapes(n: int, d: int = 3, allow_round_up: bool = True) -> list[int]:
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
