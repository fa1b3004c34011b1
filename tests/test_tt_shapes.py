import itertools
import math

import pytest

from gnn_tt.embedding.tt_shapes import (PARTITION_ROWS, TIGHT_ROWS, TTShapePolicy,
                                        balanced_factors, check_tt_shapes, choose_tt_shapes,
                                        normalize_tt_ranks, suggest_tt_shapes)


@pytest.mark.parametrize("n, d", [(2_449_029, 3), (111_059_956, 3), (169_343, 2), (1000, 4),
                                  (1_000_003, 3), (7, 3), (1, 2)])
def test_rows_round_up_a_little_and_stay_balanced(n, d):
    shapes = suggest_tt_shapes(n, d)
    assert len(shapes) == d and shapes == sorted(shapes)
    assert n <= math.prod(shapes)
    if n >= 2 ** d:  # large enough for balanced factors
        assert math.prod(shapes) <= 1.01 * n
        assert shapes[-1] <= 2 * shapes[0]


def test_rows_prefer_balance_within_slack():
    assert suggest_tt_shapes(2_449_029) == [135, 135, 135]  # 0.46% padding
    assert suggest_tt_shapes(1000, 3) == [10, 10, 10]


@pytest.mark.parametrize("n, d, expected", [(100, 3, [4, 5, 5]), (128, 3, [4, 4, 8]),
                                            (13, 3, [1, 1, 13]), (64, 2, [8, 8]),
                                            (1, 3, [1, 1, 1])])
def test_columns_exact(n, d, expected):
    assert suggest_tt_shapes(n, d, allow_round_up=False) == expected


@pytest.mark.parametrize("d", [2, 3])
def test_columns_exact_are_the_most_balanced_brute_force(d):
    for n in range(1, 150):
        divisors = [f for f in range(1, n + 1) if n % f == 0]
        tuples = [t for t in itertools.product(divisors, repeat=d)
                  if math.prod(t) == n and list(t) == sorted(t)]
        best_ratio = min(t[-1] / t[0] for t in tuples)
        got = suggest_tt_shapes(n, d, allow_round_up=False)
        assert math.prod(got) == n and got == sorted(got)
        assert got[-1] / got[0] == best_ratio, (n, got)


@pytest.mark.parametrize("kwargs, match", [({"n": 0}, "n=0"), ({"n": 2.5}, "n=2.5"),
                                           ({"n": 10, "d": 0}, "d=0")])
def test_suggest_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        suggest_tt_shapes(**kwargs)


@pytest.mark.parametrize("p, q, match", [
    ([3, 4], [2, 3, 2], "same length"),
    ([60], [12], "need 2, 3 or 4 cores"),
    ([2, 2, 2, 2, 2], [1, 1, 1, 3, 4], "need 2, 3 or 4 cores"),
    ([3, 0, 5], [2, 2, 3], "positive int"),
    ([3, 4, 4], [2, 2, 3], r"product 48 < num_embeddings=50"),
    ([3, 4, 5], [2, 2, 2], r"product 8 != embedding_dim=12"),
])
def test_check_tt_shapes_errors(p, q, match):
    with pytest.raises(ValueError, match=match):
        check_tt_shapes(50, 12, p, q)


def test_normalize_tt_ranks():
    assert normalize_tt_ranks(16, 3) == [16, 16]
    assert normalize_tt_ranks([2, 3, 4], 4) == [2, 3, 4]
    with pytest.raises(ValueError, match=r"tt_ranks=\[2\]: need 2 inner ranks"):
        normalize_tt_ranks([2], 3)
    with pytest.raises(ValueError, match=r"tt_ranks=\[2, 0\]"):
        normalize_tt_ranks([2, 0], 3)


def test_row_shapes_with_top_parts_capacity():
    assert PARTITION_ROWS.row_shapes(2_449_029, top_parts=125) == (125, 144, 143)
    for n in (1, 7, 100, 999, 12345):
        for p1 in {min(k, n) for k in (1, 2, 3, n // 2 or 1, n)}:
            p = PARTITION_ROWS.row_shapes(n, top_parts=p1)
            need = math.ceil(1.05 * n / p1)
            assert p[0] == p1 and p[1] * p[2] >= need
            # Balanced: the smaller factor one less would not hold the capacity.
            assert p[1] * (p[2] - 1) < need or p[2] == 1
    assert PARTITION_ROWS.row_shapes(1000, 4, top_parts=10) == (10, 5, 5, 5)
    with pytest.raises(ValueError,
                       match=r"top_parts must be in \[1, num_embeddings=10\], got 11"):
        PARTITION_ROWS.row_shapes(10, top_parts=11)
    with pytest.raises(ValueError, match=r"top_parts needs num_cores >= 2, got 1"):
        PARTITION_ROWS.row_shapes(10, 1, top_parts=2)


@pytest.mark.parametrize("n", [1, 2, 17, 64, 1000, 1001, 99991])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_balanced_factors_brute_force(n, k):
    f = balanced_factors(n, k)
    assert len(f) == k and math.prod(f) >= n and list(f) == sorted(f, reverse=True)
    # Balanced up to the rounding of the k-th root, and tight: the largest factor one smaller
    # would no longer reach n.
    assert f[0] - f[-1] <= 1 + (k > 2)
    assert (f[0] - 1) * math.prod(f[1:]) < n


@pytest.mark.parametrize("n, d", [(2_449_029, 3), (169_343, 2), (1000, 4), (7, 3), (1, 2)])
def test_row_shapes_without_top_parts_factor_the_slack_rows(n, d):
    assert TIGHT_ROWS.row_shapes(n, d) == tuple(suggest_tt_shapes(n, d))
    assert PARTITION_ROWS.row_shapes(n, d) == tuple(suggest_tt_shapes(math.ceil(n * 1.05), d))


def test_choose_tt_shapes_keeps_given_factors_and_their_core_count():
    assert choose_tt_shapes(2_449_029, 100) == ((135, 135, 135), (4, 5, 5))
    assert choose_tt_shapes(1000, 64, PARTITION_ROWS, num_cores=2) == ((32, 33), (8, 8))
    # d follows the given row factors, else the given column factors.
    assert choose_tt_shapes(1000, 16, p_shapes=[10, 10, 10, 10]) == ((10, 10, 10, 10),
                                                                     (2, 2, 2, 2))
    assert choose_tt_shapes(1000, 16, q_shapes=[4, 4]) == ((28, 36), (4, 4))
    # Given factors are not validated here (check_tt_shapes does that).
    assert choose_tt_shapes(1000, 16, p_shapes=[2, 2], q_shapes=[3]) == ((2, 2), (3,))


def test_policy_rejects_a_slack_below_one():
    with pytest.raises(ValueError, match=r"'TTShapePolicy': row_slack must be >= 1, got 0.9"):
        TTShapePolicy(row_slack=0.9)
