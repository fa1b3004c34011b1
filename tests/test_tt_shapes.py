import itertools
import math

import pytest

from gnn_tt.embedding.tt_shapes import check_tt_shapes, normalize_tt_ranks, suggest_tt_shapes


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
