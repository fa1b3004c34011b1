import numpy as np
import pytest
import torch

from gnn_tt.data.graph import CSRGraph
from partition.repair import repair_capacity


def _csr(edges: list[tuple[int, int]], n: int) -> tuple[np.ndarray, np.ndarray]:
    g = CSRGraph.from_edge_index(torch.tensor(edges, dtype=torch.long).t().reshape(2, -1), n)
    return g.rowptr.numpy(), g.col.numpy()


def _random_graph(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return _csr([tuple(e) for e in rng.integers(0, n, (m, 2)).tolist()], n)


def test_boundary_node_moves_to_its_neighbours_part():
    # Part 0 = {0,1,2,3} is one over capacity 3; 0-1-2 is a triangle, node 3 hangs on part 1.
    rowptr, col = _csr([(0, 1), (1, 2), (2, 0), (3, 4), (3, 5), (4, 5), (2, 3)], 6)
    part, moved = repair_capacity(rowptr, col, np.array([0, 0, 0, 0, 1, 1]), 2, 3)
    assert part.tolist() == [0, 0, 0, 1, 1, 1]
    assert moved == 1


def test_feasible_input_is_returned_unchanged():
    rowptr, col = _random_graph(50, 120, 0)
    part0 = np.arange(50) % 5
    part, moved = repair_capacity(rowptr, col, part0, 5, 10)
    assert moved == 0 and np.array_equal(part, part0)


@pytest.mark.parametrize("seed", range(6))
def test_single_overflow_matches_brute_force(seed):
    # One node too many in part 0: the evicted node and its destination, by explicit loops.
    n, k, cap = 40, 5, 9
    rowptr, col = _random_graph(n, 90, seed)
    rng = np.random.default_rng(seed)
    part0 = np.repeat(np.arange(k), [cap + 1, cap - 1, cap, cap - 2, cap - 3])[rng.permutation(n)]
    count = np.bincount(part0, minlength=k)
    nbrs = [col[rowptr[v]:rowptr[v + 1]].tolist() for v in range(n)]

    def tally(v: int) -> list[int]:
        return [sum(part0[u] == q for u in nbrs[v]) for q in range(k)]

    score = {}
    for v in np.flatnonzero(part0 == 0).tolist():
        t = tally(v)
        score[v] = t[0] - max([t[q] for q in range(k) if count[q] < cap], default=0)
    evicted = min(score, key=lambda v: (score[v], v))
    t = tally(evicted)
    roomy = [q for q in range(k) if count[q] < cap and t[q] > 0]
    dest = max(roomy, key=lambda q: (t[q], -q)) if roomy else \
        next(q for q in range(k) if count[q] < cap)

    part, moved = repair_capacity(rowptr, col, part0, k, cap)
    expected = part0.copy()
    expected[evicted] = dest
    assert moved == 1
    assert part.tolist() == expected.tolist()


@pytest.mark.parametrize("seed", range(4))
def test_heavy_overflow_respects_capacity_and_moves_only_the_excess(seed):
    n, k, cap = 400, 10, 42
    rowptr, col = _random_graph(n, 1500, seed)
    rng = np.random.default_rng(seed)
    part0 = np.minimum(rng.geometric(0.3, n) - 1, k - 1)  # very skewed
    count0 = np.bincount(part0, minlength=k)
    part, moved = repair_capacity(rowptr, col, part0, k, cap)
    count = np.bincount(part, minlength=k)
    assert count.max() <= cap and part.min() >= 0 and part.max() < k
    changed = part != part0
    assert moved == int(np.maximum(count0 - cap, 0).sum()) == int(changed.sum())
    # Only nodes of overfull parts move, and overfull parts end exactly full.
    assert (count0[part0[changed]] > cap).all()
    assert (count[count0 > cap] == cap).all()


def test_isolated_movers_fill_remaining_room_in_part_order():
    rowptr, col = _csr([], 7)
    part, moved = repair_capacity(rowptr, col, np.zeros(7, dtype=np.int64), 3, 3)
    # Equal scores: the lowest ids 0..3 leave and fill part 1, then part 2; 4..6 stay.
    assert part.tolist() == [1, 1, 1, 2, 0, 0, 0]
    assert moved == 4


def test_infeasible_capacity_raises():
    rowptr, col = _csr([(0, 1)], 5)
    with pytest.raises(ValueError, match="2 parts of capacity 2 cannot hold 5 nodes"):
        repair_capacity(rowptr, col, np.zeros(5, dtype=np.int64), 2, 2)
