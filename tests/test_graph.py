import pytest
import torch

import gnn_tt.data.graph as graph_module
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


# ---- the chunked build ------------------------------------------------------------------

def set_oracle(edge_index: torch.Tensor, num_nodes: int, symmetrize: bool,
               remove_self_loops: bool) -> tuple[list[int], list[int]]:
    """Brute force: a Python set of neighbours per node, the oracle on tiny graphs."""
    nbrs = [set() for _ in range(num_nodes)]
    for u, v in edge_index.t().tolist():
        if remove_self_loops and u == v:
            continue
        nbrs[u].add(v)
        if symmetrize:
            nbrs[v].add(u)
    rowptr, col = [0], []
    for s in nbrs:
        col += sorted(s)
        rowptr.append(len(col))
    return rowptr, col


def one_shot_reference(edge_index: torch.Tensor, num_nodes: int, symmetrize: bool,
                       remove_self_loops: bool) -> CSRGraph:
    """The build before the chunked one: one sort of every key ``src * n + dst``."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    if symmetrize:
        src, dst = torch.cat([src, dst]), torch.cat([dst, src])
    if remove_self_loops:
        src, dst = src[src != dst], dst[src != dst]
    n = max(num_nodes, 1)
    key = torch.unique(src * n + dst)
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(key // n, minlength=num_nodes), 0, out=rowptr[1:])
    col_dtype = torch.int32 if num_nodes <= graph_module._INT32_MAX else torch.long
    return CSRGraph(rowptr, (key % n).to(col_dtype), num_nodes)


def assert_same(graph: CSRGraph, ref: CSRGraph) -> None:
    assert graph.num_nodes == ref.num_nodes
    assert graph.rowptr.dtype == torch.long and graph.col.dtype == ref.col.dtype
    assert torch.equal(graph.rowptr, ref.rowptr) and torch.equal(graph.col, ref.col)


def messy_edges(num_nodes: int, num_edges: int, seed: int, dtype=torch.long) -> torch.Tensor:
    """Random edges over the lower 3/4 of the ids (the rest isolated), plus duplicates,
    reversed duplicates and self-loops."""
    gen = torch.Generator().manual_seed(seed)
    e = torch.randint(0, max(3 * num_nodes // 4, 1), (2, num_edges), generator=gen)
    loops = torch.randint(0, num_nodes, (num_edges // 10,), generator=gen).repeat(2, 1)
    e = torch.cat([e, e[:, :num_edges // 5], e[:, :num_edges // 5].flip(0), loops], dim=1)
    return e[:, torch.randperm(e.size(1), generator=gen)].to(dtype)


def split_cycling(edge_index: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Consecutive chunks of the given sizes, cycling, and an empty chunk at the start."""
    chunks, s, i = [edge_index[:, :0]], 0, 0
    while s < edge_index.size(1):
        chunks.append(edge_index[:, s:s + sizes[i % len(sizes)]])
        s += sizes[i % len(sizes)]
        i += 1
    return chunks


@pytest.mark.parametrize("symmetrize", [True, False])
@pytest.mark.parametrize("remove_self_loops", [True, False])
@pytest.mark.parametrize("dtype", [torch.int32, torch.long])
@pytest.mark.parametrize("sizes", [None, [1, 3, 7], [50]], ids=["one", "1-3-7", "50"])
def test_chunks_match_set_oracle(symmetrize, remove_self_loops, dtype, sizes):
    n = 31
    edge_index = messy_edges(n, 120, seed=3, dtype=dtype)
    chunks = [edge_index] if sizes is None else split_cycling(edge_index, sizes)
    graph = CSRGraph.from_edge_chunks(chunks, n, symmetrize=symmetrize,
                                      remove_self_loops=remove_self_loops)
    rowptr, col = set_oracle(edge_index, n, symmetrize, remove_self_loops)
    assert graph.rowptr.tolist() == rowptr and graph.col.tolist() == col
    assert graph.col.dtype == torch.int32
    if remove_self_loops:  # else self-loops may land on them
        assert int(graph.degree()[3 * n // 4:].sum()) == 0, "isolated nodes must stay empty"
    assert_same(CSRGraph.from_edge_index(edge_index, n, symmetrize, remove_self_loops), graph)


@pytest.mark.parametrize("symmetrize", [True, False])
@pytest.mark.parametrize("remove_self_loops", [True, False])
@pytest.mark.parametrize("step", [2, 7, 1 << 20])
def test_chunked_equals_one_shot_on_random_graphs(symmetrize, remove_self_loops, step,
                                                  monkeypatch):
    # A small internal step splits the input and the row ranges into many pieces; node 0
    # gets a degree far above the step (a row range of one row).
    monkeypatch.setattr(graph_module, "_STEP", step)
    n = 300
    edge_index = messy_edges(n, 2000, seed=step)
    hub = torch.stack([torch.zeros(120, dtype=torch.long), torch.arange(120) * 2 % n])
    edge_index = torch.cat([edge_index, hub], dim=1)
    ref = one_shot_reference(edge_index, n, symmetrize, remove_self_loops)
    check_csr(ref)
    for chunks in ([edge_index], split_cycling(edge_index, [1, 3, 7]),
                   list(edge_index.split(97, dim=1))):
        assert_same(CSRGraph.from_edge_chunks(chunks, n, symmetrize, remove_self_loops), ref)
    assert_same(CSRGraph.from_edge_index(edge_index, n, symmetrize, remove_self_loops), ref)


@pytest.mark.parametrize("step", [2, 5, 1 << 20])
def test_sorted_input_and_upper_keys(step, monkeypatch):
    # Rows that arrive sorted skip the sort; the result must not depend on it.
    monkeypatch.setattr(graph_module, "_STEP", step)
    n = 60
    edge_index = messy_edges(n, 500, seed=7)
    ref = one_shot_reference(edge_index, n, True, False)
    lo, hi = edge_index.min(0).values, edge_index.max(0).values
    assert_same(CSRGraph.from_upper_keys(torch.unique(lo * n + hi), n), ref)
    # CSR order (sorted by source, then destination) is sorted input too.
    again = CSRGraph.from_edge_chunks(list(ref.edge_index().split(9, dim=1)), n,
                                      symmetrize=False, remove_self_loops=False)
    assert_same(again, ref)


def test_int64_ids_beyond_the_int32_bound(monkeypatch):
    edge_index = messy_edges(50, 300, seed=1)
    small = CSRGraph.from_edge_chunks([edge_index], 50)
    assert small.col.dtype == torch.int32
    monkeypatch.setattr(graph_module, "_INT32_MAX", 40)  # as if 50 nodes did not fit int32
    wide = CSRGraph.from_edge_chunks(split_cycling(edge_index, [3, 7]), 50)
    assert wide.col.dtype == torch.long
    assert torch.equal(wide.rowptr, small.rowptr) and torch.equal(wide.col, small.col.long())
    assert_same(wide, one_shot_reference(edge_index, 50, True, True))


def test_chunks_empty_graph_and_isolated_nodes():
    empty = CSRGraph.from_edge_chunks([], 4)
    assert empty.num_edges == 0 and torch.equal(empty.rowptr, torch.zeros(5, dtype=torch.long))
    assert empty.col.dtype == torch.int32
    none = CSRGraph.from_edge_chunks([torch.zeros(2, 0, dtype=torch.int32)], 0)
    assert none.num_nodes == 0 and none.rowptr.tolist() == [0] and none.num_edges == 0
    only_loops = CSRGraph.from_edge_chunks([torch.tensor([[2, 2], [2, 2]])], 3)
    assert only_loops.num_edges == 0 and only_loops.rowptr.tolist() == [0, 0, 0, 0]
    kept = CSRGraph.from_edge_chunks([torch.tensor([[2, 2], [2, 2]])], 3,
                                     remove_self_loops=False)
    assert kept.rowptr.tolist() == [0, 0, 0, 1] and kept.col.tolist() == [2]


class Replay:
    """Re-iterable chunks; ``change`` alters what the second iteration yields."""

    def __init__(self, chunks, change=None):
        self.chunks, self.change, self.passes = chunks, change, 0

    def __iter__(self):
        self.passes += 1
        chunks = self.chunks if self.passes == 1 or self.change is None else self.change
        return iter(chunks)


def test_chunks_are_read_twice_and_must_not_change():
    edges = torch.tensor([[0, 1, 2], [1, 2, 3]])
    replay = Replay([edges[:, :2], edges[:, 2:]])
    graph = CSRGraph.from_edge_chunks(replay, 4)
    assert replay.passes == 2 and graph.num_edges == 6
    with pytest.raises(ValueError, match="more edges on the second pass"):
        CSRGraph.from_edge_chunks(Replay([edges], [edges, edges[:, :1]]), 4)
    with pytest.raises(ValueError, match="fewer edges on the second pass"):
        CSRGraph.from_edge_chunks(Replay([edges], [edges[:, :2]]), 4)


def test_chunks_bad_input():
    edges = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(TypeError, match="chunks must be re-iterable .* got generator"):
        CSRGraph.from_edge_chunks((c for c in [edges]), 3)
    with pytest.raises(TypeError, match="got Tensor; use from_edge_index"):
        CSRGraph.from_edge_chunks(edges, 3)
    with pytest.raises(ValueError, match="num_nodes must be an int >= 0, got -1"):
        CSRGraph.from_edge_chunks([edges], -1)
    with pytest.raises(ValueError, match=r"chunks\[1\] holds node id 5, outside \[0, "
                                         r"num_nodes=3\)"):
        CSRGraph.from_edge_chunks([edges, torch.tensor([[0], [5]])], 3)
    with pytest.raises(ValueError, match=r"chunks\[0\] must have shape \[2, E\], got \[3\]"):
        CSRGraph.from_edge_chunks([torch.arange(3)], 3)
    with pytest.raises(TypeError, match=r"chunks\[0\] must hold integer node ids"):
        CSRGraph.from_edge_chunks([edges.float()], 3)
