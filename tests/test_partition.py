import math
import sys

import numpy as np
import pytest
import torch

import partition.assign
from partition import METHODS, RowAssignment, assign_rows, resolve_method
from partition.metis import part_graph, to_csr
from partition.orderings import metis_flat_rows


def _messy_graph(seed: int = 0) -> tuple[torch.Tensor, int]:
    """Random graph with self-loops, duplicate and reversed edges, isolated nodes and several
    components."""
    g = torch.Generator().manual_seed(seed)
    n = 230
    a = torch.randint(0, 100, (2, 400), generator=g)  # component on 0..99
    b = torch.randint(100, 200, (2, 300), generator=g)  # component on 100..199; 200.. isolated
    loops = torch.arange(0, 20).repeat(2, 1)
    ei = torch.cat([a, b, a[:, :50], a.flip(0)[:, 50:80], loops], dim=1)
    return ei, n


def _check_injective(ra: RowAssignment, num_nodes: int, p) -> None:
    rows = ra.row_of_node
    assert rows.dtype == torch.long and rows.shape == (num_nodes,)
    assert int(rows.min()) >= 0 and int(rows.max()) < math.prod(p)
    assert torch.unique(rows).numel() == num_nodes


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("p", [(16, 16), (6, 7, 6), (3, 4, 5, 4), (230, 1)])
def test_injective_and_in_range(method, p):
    ei, n = _messy_graph()
    ra = assign_rows(ei, n, p, method=method, num_parts=7, seed=1)
    _check_injective(ra, n, p)
    assert ra.method == resolve_method(method, 0) and ra.tt_p_shapes == tuple(p)
    assert len(ra.stats["edge_cut"]) == len(p) - 1


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_for_a_seed(method):
    ei, n = _messy_graph(3)
    a = assign_rows(ei, n, (6, 7, 6), method=method, num_parts=5, seed=4)
    b = assign_rows(ei, n, (6, 7, 6), method=method, num_parts=5, seed=4)
    assert torch.equal(a.row_of_node, b.row_of_node)


def test_hierarchical_tight_capacity_needs_repair():
    # prod(p) == N: every block must end exactly full, so METIS' imbalance must be repaired.
    g = torch.Generator().manual_seed(0)
    n, p = 240, (4, 6, 10)
    ei = torch.randint(0, n, (2, 1500), generator=g)
    ra = assign_rows(ei, n, p)
    _check_injective(ra, n, p)
    blocks = torch.bincount(ra.row_of_node // 60, minlength=4)
    assert blocks.tolist() == [60, 60, 60, 60]
    assert ra.stats["moved"] > 0


def test_graph_that_fits_one_block_is_not_cut():
    # N = 230 <= p2 * p3 = 256: everything shares i1 = 0 (no METIS call, no cut).
    ei, n = _messy_graph()
    ra = assign_rows(ei, n, (4, 16, 16))
    _check_injective(ra, n, (4, 16, 16))
    assert (ra.row_of_node < 256).all()
    assert ra.stats["edge_cut"][0] == 0 and ra.stats["share_i1"] == 1.0


def planted_communities(num_comm: int, size: int, seed: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense communities (edge prob. 0.3) joined by a few random edges; ids shuffled."""
    rng = np.random.default_rng(seed)
    comm = np.repeat(np.arange(num_comm), size)
    u, v = np.triu_indices(num_comm * size, 1)
    same = comm[u] == comm[v]
    keep = same & (rng.random(u.size) < 0.3)
    noise = rng.integers(0, num_comm * size, (2, 3 * num_comm))
    perm = rng.permutation(num_comm * size)  # public id of each hierarchy position
    ei = np.concatenate([np.stack([u[keep], v[keep]]), noise], axis=1)
    out_comm = np.empty_like(comm)
    out_comm[perm] = comm
    return torch.from_numpy(perm[ei]), torch.from_numpy(out_comm)


@pytest.mark.parametrize("seed", range(3))
def test_planted_communities_land_in_one_i1_block(seed):
    p = (6, 8, 8)  # 6 blocks of capacity 64 for 6 communities of 60
    ei, comm = planted_communities(6, 60, seed)
    ra = assign_rows(ei, 360, p, seed=seed, labels=comm)
    i1 = ra.row_of_node // 64
    for c in range(6):
        share = torch.bincount(i1[comm == c], minlength=6).max().item() / 60
        assert share >= 0.95, f"community {c}: only {share:.2f} in its main i1 block"
    assert ra.stats["purity_i1"] >= 0.95
    rand = assign_rows(ei, 360, p, method="random", seed=seed, labels=comm)
    assert rand.stats["purity_i1"] < 0.6


def test_auto_is_hierarchical_up_to_the_edge_threshold_and_multilevel_above(monkeypatch):
    ei, n = _messy_graph(4)
    edges = to_csr(ei, n).num_edges
    assert resolve_method("auto", edges) == "hierarchical"  # far below the threshold
    assert resolve_method("random", 10**12) == "random"
    for threshold, method in ((edges, "hierarchical"), (edges - 1, "multilevel")):
        monkeypatch.setattr(partition.assign, "AUTO_MULTILEVEL_EDGES", threshold)
        auto = assign_rows(ei, n, (6, 7, 6), method="auto", seed=2)
        explicit = assign_rows(ei, n, (6, 7, 6), method=method, seed=2)
        assert auto.method == method
        assert torch.equal(auto.row_of_node, explicit.row_of_node)


def test_cora_hierarchical_shares_far_more_than_random(shared_data):
    data = np.load(shared_data / "cora.npz")
    ei, n, y = torch.from_numpy(data["edge_index"]), int(data["num_nodes"]), data["y"]
    p = (8, 20, 18)
    hier = assign_rows(ei, n, p, labels=torch.from_numpy(y))
    rand = assign_rows(ei, n, p, method="random", labels=torch.from_numpy(y))
    _check_injective(hier, n, p)
    assert hier.stats["share_i1"] > 0.8  # most edges stay inside one of the 8 i1 blocks
    assert hier.stats["share_i1"] > 4 * rand.stats["share_i1"]  # random: about 1/8
    assert hier.stats["share_i12"] > 20 * rand.stats["share_i12"]
    assert hier.stats["purity_i1"] > rand.stats["purity_i1"] + 0.15


@pytest.mark.parametrize("k", [1, 3, 7])
def test_metis_flat_parts_are_contiguous_row_ranges(k):
    ei, n = _messy_graph(1)
    graph = to_csr(ei, n)
    rowptr, col = graph.rowptr.numpy(), graph.col.numpy()
    part = part_graph(rowptr, col, k, seed=2)  # the oracle: the same METIS call
    rows = metis_flat_rows(rowptr, col, k, seed=2)
    start = 0
    for q in range(k):
        members = np.flatnonzero(part == q)
        assert sorted(rows[members].tolist()) == list(range(start, start + members.size))
        # Inside a part, nodes keep their id order.
        assert np.all(np.diff(rows[members]) > 0)
        start += members.size
    ra = assign_rows(ei, n, (16, 16), method="metis-flat", num_parts=k, seed=2)
    assert np.array_equal(ra.row_of_node.numpy(), rows)


def test_metis_flat_zero_parts_is_original_order():
    ei, n = _messy_graph()
    ra = assign_rows(ei, n, (16, 16), method="metis-flat", num_parts=0)
    assert torch.equal(ra.row_of_node, torch.arange(n))
    assert torch.equal(assign_rows(ei, n, (16, 16), method="original").row_of_node,
                       torch.arange(n))


def test_csr_graph_input_equals_edge_index_input():
    ei, n = _messy_graph(2)
    a = assign_rows(ei, n, (6, 7, 6), seed=5)
    b = assign_rows(to_csr(ei, n), n, (6, 7, 6), seed=5)
    assert torch.equal(a.row_of_node, b.row_of_node)


def test_rcm_and_random_orders():
    # A path graph in shuffled ids: RCM puts path neighbours on adjacent rows.
    n = 50
    perm = torch.from_numpy(np.random.default_rng(0).permutation(n))
    ei = torch.stack([perm[:-1], perm[1:]])
    rows = assign_rows(ei, n, (50, 1), method="rcm").row_of_node
    assert (rows[ei[0]] - rows[ei[1]]).abs().max().item() == 1
    r1 = assign_rows(ei, n, (50, 1), method="random", seed=1).row_of_node
    r2 = assign_rows(ei, n, (50, 1), method="random", seed=2).row_of_node
    assert not torch.equal(r1, r2)


def test_errors_name_the_values():
    ei, n = _messy_graph()
    with pytest.raises(ValueError, match=r"prod = 225 rows, fewer than num_nodes = 230"):
        assign_rows(ei, n, (15, 15))
    with pytest.raises(ValueError, match=r"node id 230, outside \[0, num_nodes=230\)"):
        assign_rows(torch.cat([ei, torch.tensor([[0], [230]])], 1), n, (16, 16))
    with pytest.raises(ValueError, match=r"negative node id \(-1\)"):
        assign_rows(torch.cat([ei, torch.tensor([[-1], [3]])], 1), n, (16, 16))
    with pytest.raises(ValueError, match="graph has num_nodes=230, but num_nodes=231"):
        assign_rows(to_csr(ei, n), n + 1, (16, 16))
    with pytest.raises(ValueError, match="needs num_parts"):
        assign_rows(ei, n, (16, 16), method="metis-flat")
    with pytest.raises(ValueError, match=r"num_parts must lie in \[0, num_nodes = 230\], got 231"):
        assign_rows(ei, n, (16, 16), method="metis-flat", num_parts=231)
    with pytest.raises(ValueError, match="unknown method 'spectral'; valid: auto, hierarchical"):
        assign_rows(ei, n, (16, 16), method="spectral")
    with pytest.raises(ValueError, match=r"tt_p_shapes must be .* got \(16, 0\)"):
        assign_rows(ei, n, (16, 0))
    with pytest.raises(ValueError, match=r"expected 230, got int64 \[229\]"):
        assign_rows(ei, n, (16, 16), labels=torch.zeros(229, dtype=torch.long))


def test_missing_pymetis_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymetis", None)  # makes `import pymetis` fail
    ei, n = _messy_graph()
    with pytest.raises(ImportError, match="needs the 'pymetis' package"):
        assign_rows(ei, n, (16, 16))


def test_repr():
    ei, n = _messy_graph()
    ra = assign_rows(ei, n, (16, 16), method="metis-flat", num_parts=4)
    assert repr(ra) == ("RowAssignment(method=metis-flat, num_nodes=230, tt_p_shapes=(16, 16), "
                        "num_parts=4, seed=0)")
