import math
import re
import warnings

import numpy as np
import pytest
import torch

import partition.coarsen as coarsen_module
import partition.memory
import partition.multilevel as multilevel
from gnn_tt.data.graph import CSRGraph
from gnn_tt.data.synthetic import synthetic_graph
from partition import assign_rows
from partition.coarsen import coarsen, contract
from partition.metis import to_csr
from partition.multilevel import multilevel_rows, multilevel_split
from partition.repair import repair_capacity
from partition.weighted import WeightedGraph
from test_partition import planted_communities


def _random_weighted(n: int, m: int, seed: int) -> WeightedGraph:
    rng = np.random.default_rng(seed)
    g = CSRGraph.from_edge_index(torch.from_numpy(rng.integers(0, n, (2, m))), n)
    rowptr, col = g.rowptr.numpy(), g.col.numpy().astype(np.int64)
    src = np.repeat(np.arange(n), np.diff(rowptr))
    return WeightedGraph(rowptr, col, 1 + (src + col) % 3, rng.integers(1, 5, n))


def _edge_dict(graph: WeightedGraph) -> dict[tuple[int, int], int]:
    src = np.repeat(np.arange(graph.num_nodes), np.diff(graph.rowptr))
    return {(int(a), int(b)): int(w) for a, b, w in zip(src, graph.col, graph.edge_weight)}


def test_contract_sums_node_and_edge_weights_like_loops(monkeypatch):
    monkeypatch.setattr(coarsen_module, "_CONTRACT_EDGES", 50)  # several pieces
    graph = _random_weighted(90, 400, seed=1)
    cluster = np.random.default_rng(2).integers(0, 40, 90) * 2  # ids in [0, n), with gaps
    level = contract(graph, cluster)
    coarse, f2c = level.graph, level.fine_to_coarse
    # Coarse ids follow the cluster ids' order.
    assert np.array_equal(np.unique(cluster, return_inverse=True)[1], f2c)
    want_nodes = np.bincount(f2c, weights=graph.node_weight).astype(np.int64)
    assert np.array_equal(coarse.node_weight, want_nodes)
    want: dict[tuple[int, int], int] = {}
    for (a, b), w in _edge_dict(graph).items():
        if f2c[a] != f2c[b]:
            key = (int(f2c[a]), int(f2c[b]))
            want[key] = want.get(key, 0) + w
    got = _edge_dict(coarse)
    assert got == want and len(got) == coarse.num_edges  # no self-loop, no duplicate


def test_coarsen_caps_cluster_weight_and_stops_at_the_target():
    ei, _ = planted_communities(8, 50, seed=0)
    g = to_csr(ei, 400)
    graph = WeightedGraph(g.rowptr.numpy(), g.col.numpy())
    levels = coarsen(graph, max_node_weight=30, target_nodes=40, seed=0)
    sizes = [level.graph.num_nodes for level in levels]
    assert sizes and sizes[-1] <= 40 < min([400, *sizes[:-1]])
    for level in levels:
        assert level.graph.node_weight.max() <= 30 and level.graph.node_weight.sum() == 400
    assert coarsen(graph, 30, 400, 0) == []  # small enough already
    assert coarsen(graph, 1, 40, 0) == []  # clusters cannot grow: no level shrinks


@pytest.mark.parametrize("seed", range(3))
def test_split_respects_capacity_even_when_tight(seed):
    rng = np.random.default_rng(seed)
    g = CSRGraph.from_edge_index(torch.from_numpy(rng.integers(0, 600, (2, 3000))), 600)
    rowptr, col = g.rowptr.numpy(), g.col.numpy()
    for num_parts, capacity in ((10, 60), (12, 55), (7, 100)):
        part, moved = multilevel_split(rowptr, col, num_parts, capacity, seed)
        assert part.shape == (600,) and part.min() >= 0 and part.max() < num_parts
        assert np.bincount(part, minlength=num_parts).max() <= capacity
        assert moved >= 0


@pytest.fixture(params=["direct", "coarsened"])
def coarse_mode(request, monkeypatch):
    """``direct``: the defaults (small graphs are not coarsened); ``coarsened``: coarsen down
    to 4 nodes per sub-block, so the planted graphs go through every stage."""
    if request.param == "coarsened":
        monkeypatch.setattr(multilevel, "_COARSE_NODES_PER_PART", 4)
    return request.param


@pytest.mark.parametrize("seed", range(3))
def test_planted_communities_recovered_as_well_as_hierarchical(coarse_mode, seed):
    p = (6, 8, 8)  # 6 blocks of capacity 64 for 6 communities of 60
    ei, comm = planted_communities(6, 60, seed)
    ml = assign_rows(ei, 360, p, method="multilevel", seed=seed, labels=comm)
    hier = assign_rows(ei, 360, p, method="hierarchical", seed=seed, labels=comm)
    assert ml.stats["purity_i1"] >= hier.stats["purity_i1"] - 0.02
    assert ml.stats["purity_i1"] >= 0.95
    assert ml.stats["share_i1"] >= 0.95 * hier.stats["share_i1"]


@pytest.mark.parametrize("p", [(8, 9, 10), (4, 5, 6, 6), (24, 30)])
def test_capacity_at_every_level_and_injective_rows(coarse_mode, p):
    ei, _ = planted_communities(12, 55, seed=1)  # 660 nodes
    ra = assign_rows(ei, 660, p, method="multilevel", seed=3)
    rows = ra.row_of_node.numpy()
    assert rows.min() >= 0 and rows.max() < math.prod(p) and np.unique(rows).size == 660
    for level in range(1, len(p)):
        capacity = math.prod(p[level:])
        blocks = np.bincount(rows // capacity, minlength=math.prod(p[:level]))
        assert blocks.max() <= capacity, f"level {level}"


def test_deterministic_for_a_seed(coarse_mode):
    ei, _ = planted_communities(10, 40, seed=2)
    a = assign_rows(ei, 400, (7, 8, 8), method="multilevel", seed=5).row_of_node
    b = assign_rows(ei, 400, (7, 8, 8), method="multilevel", seed=5).row_of_node
    assert torch.equal(a, b)


def test_quality_at_least_095_of_hierarchical_on_a_mid_size_graph():
    # 20,000 nodes: the top level is coarsened (k = 27 sub-blocks, target 8,640 nodes), the
    # second is bisected directly. Measured: share_i1 0.980x, share_i12 1.31x of hierarchical
    # (and 0.963x-0.984x, 1.19x-1.38x over graph seeds 0-3 at 20k, 30k and 50k nodes).
    ds = synthetic_graph(nodes=20_000, seed=1)
    p = (27, 28, 28)
    ml = assign_rows(ds.graph, ds.num_nodes, p, method="multilevel", seed=1).stats
    hier = assign_rows(ds.graph, ds.num_nodes, p, method="hierarchical", seed=1).stats
    assert ml["share_i1"] >= 0.95 * hier["share_i1"]
    assert ml["share_i12"] >= 0.95 * hier["share_i12"]


def test_node_weighted_repair_covers_the_excess():
    graph = _random_weighted(80, 300, seed=4)
    part0 = np.zeros(80, dtype=np.int64)
    part0[60:] = 1  # part 0 far over capacity
    capacity = int(graph.node_weight.sum() // 3) + 4
    part, moved = repair_capacity(graph.rowptr, graph.col, part0, 4, capacity,
                                  graph.node_weight, graph.edge_weight)
    load = np.bincount(part, weights=graph.node_weight, minlength=4)
    # Parts give up at least their excess; leftovers overshoot by less than one node.
    assert load[0] <= capacity and moved == int((part != part0).sum())
    assert load.max() < capacity + graph.node_weight.max()
    # Unit node weights given explicitly change nothing.
    ones = np.ones(80, dtype=np.int64)
    a = repair_capacity(graph.rowptr, graph.col, part0, 4, 25)
    b = repair_capacity(graph.rowptr, graph.col, part0, 4, 25, ones)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_memory_forecasts_warn_before_they_start(monkeypatch):
    class _Tight:
        available = 1000  # bytes
    monkeypatch.setattr(partition.memory.psutil, "virtual_memory", lambda: _Tight())
    ei, _ = planted_communities(6, 60, seed=0)
    g = to_csr(ei, 360)
    rowptr, col = g.rowptr.numpy(), g.col.numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assign_rows(g, 360, (6, 8, 8), method="hierarchical")
    assert re.match(r"METIS on 360 nodes and 6,546 stored edges needs about .* GB, but only "
                    r".* available.*method='multilevel' \(or 'auto'\) coarsens",
                    str(caught[0].message))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        multilevel_rows(rowptr, col, (6, 8, 8))
    assert str(caught[0].message).startswith("the multilevel partition of 360 nodes and 6,546 "
                                             "stored edges needs about")
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assign_rows(g, 360, (6, 8, 8), method="multilevel")
