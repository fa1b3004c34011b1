import pytest
import torch

from gnn_tt.data import CSRGraph


def dense_adjacency(graph: CSRGraph) -> torch.Tensor:
    """Brute force: a Python loop over rows, the oracle for the vectorized CSR build."""
    adj = torch.zeros(graph.num_nodes, graph.num_nodes, dtype=torch.long)
    for v in range(graph.num_nodes):
        for u in graph.col[graph.rowptr[v]:graph.rowptr[v + 1]].tolist():
            adj[v, u] += 1
    return adj


def check_csr(graph: CSRGraph) -> None:
    assert graph.rowptr.dtype == torch.long
    assert graph.rowptr.shape == (graph.num_nodes + 1,)
    assert int(graph.rowptr[0]) == 0 and int(graph.rowptr[-1]) == graph.num_edges
    for v in range(graph.num_nodes):
        row = graph.col[graph.rowptr[v]:graph.rowptr[v + 1]]
        assert torch.all(row[1:] > row[:-1]), f"row {v} not strictly ascending: {row}"


@pytest.mark.parametrize("remove_self_loops", [True, False])
def test_symmetrize_dedup_self_loops_against_dense(remove_self_loops):
    gen = torch.Generator().manual_seed(0)
    n = 23
    edge_index = torch.randint(0, n, (2, 150), generator=gen)
    edge_index = torch.cat([edge_index, edge_index[:, :40], torch.tensor([[3, 5], [3, 5]])],
                           dim=1)  # duplicates and self-loops
    graph = CSRGraph.from_edge_index(edge_index, n, remove_self_loops=remove_self_loops)
    check_csr(graph)
    expected = torch.zeros(n, n, dtype=torch.long)
    expected[edge_index[0], edge_index[1]] = 1
    expected = ((expected + expected.T) > 0).long()
    if remove_self_loops:
        expected.fill_diagonal_(0)
    assert torch.equal(dense_adjacency(graph), expected)
    assert graph.num_edges == int(expected.sum())


def test_directed_keeps_direction():
    edge_index = torch.tensor([[0, 0, 2, 2, 1, 1], [1, 1, 0, 2, 2, 0]])
    graph = CSRGraph.from_edge_index(edge_index, 4, symmetrize=False)
    check_csr(graph)
    expected = torch.zeros(4, 4, dtype=torch.long)
    expected[0, 1] = expected[2, 0] = expected[1, 2] = expected[1, 0] = 1
    assert torch.equal(dense_adjacency(graph), expected)
    assert torch.equal(graph.degree(), torch.tensor([1, 2, 1, 0]))


def test_int32_col_and_round_trip():
    edge_index = torch.tensor([[0, 1, 2, 4], [1, 2, 3, 0]], dtype=torch.int32)
    graph = CSRGraph.from_edge_index(edge_index, 6)
    assert graph.col.dtype == torch.int32
    assert graph.num_nodes == 6 and graph.num_edges == 8
    assert int(graph.degree()[5]) == 0  # isolated node past the last id
    again = CSRGraph.from_edge_index(graph.edge_index(), 6)
    assert torch.equal(again.rowptr, graph.rowptr) and torch.equal(again.col, graph.col)
    assert graph.memory_bytes() == 7 * 8 + 8 * 4
    assert repr(graph).startswith("CSRGraph(num_nodes=6, num_edges=8, col=int32, device=cpu")
    moved = graph.to("cpu")
    assert torch.equal(moved.col, graph.col) and moved.num_nodes == 6


def test_num_nodes_default_and_empty():
    graph = CSRGraph.from_edge_index(torch.tensor([[0], [7]]))
    assert graph.num_nodes == 8
    empty = CSRGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 3)
    assert empty.num_edges == 0 and torch.equal(empty.rowptr, torch.zeros(4, dtype=torch.long))


def test_from_upper_keys_matches_from_edge_index():
    n = 40
    edge_index = torch.randint(0, n, (2, 300), generator=torch.Generator().manual_seed(1))
    lo, hi = edge_index.min(0).values, edge_index.max(0).values
    keys = torch.unique(lo * n + hi)  # self-loops kept once
    graph = CSRGraph.from_upper_keys(keys, n)
    check_csr(graph)
    ref = CSRGraph.from_edge_index(edge_index, n, remove_self_loops=False)
    assert torch.equal(graph.rowptr, ref.rowptr) and torch.equal(graph.col, ref.col)


def test_bad_input():
    with pytest.raises(ValueError, match=r"shape \[2, E\], got \[3, 2\]"):
        CSRGraph.from_edge_index(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer node ids, got dtype torch.float32"):
        CSRGraph.from_edge_index(torch.zeros(2, 2))
    with pytest.raises(TypeError, match="must be a torch.Tensor, got list"):
        CSRGraph.from_edge_index([[0], [1]])
    with pytest.raises(ValueError, match=r"negative node id \(-1\)"):
        CSRGraph.from_edge_index(torch.tensor([[0], [-1]]))
    with pytest.raises(ValueError, match=r"node id 5, outside \[0, num_nodes=5\)"):
        CSRGraph.from_edge_index(torch.tensor([[0], [5]]), 5)
    with pytest.raises(ValueError, match="a <= b"):
        CSRGraph.from_upper_keys(torch.tensor([1 * 4 + 0]), 4)
    with pytest.raises(ValueError, match=r"keys must lie in \[0, num_nodes\*\*2 = 16\)"):
        CSRGraph.from_upper_keys(torch.tensor([3, 16]), 4)
    with pytest.raises(ValueError, match="sorted ascending and unique"):
        CSRGraph.from_upper_keys(torch.tensor([5, 3]), 4)
    with pytest.raises(ValueError, match="1-D int64 tensor, got torch.int32"):
        CSRGraph.from_upper_keys(torch.tensor([3], dtype=torch.int32), 4)
