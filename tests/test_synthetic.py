import pytest
import torch

import gnn_tt.data.synthetic as synthetic
from gnn_tt.data import SyntheticConfig, synthetic_graph

SMALL = dict(nodes=2000, degree=20.0, classes=10, community_size=50)


@pytest.fixture(scope="module")
def small():
    return synthetic_graph(**SMALL)


def test_deterministic_and_seeded(small):
    again = synthetic_graph(**SMALL)
    for a, b in [(small.graph.rowptr, again.graph.rowptr), (small.graph.col, again.graph.col),
                 (small.y, again.y), (small.train_idx, again.train_idx),
                 (small.test_idx, again.test_idx)]:
        assert torch.equal(a, b)
    other = synthetic_graph(**SMALL, seed=1)
    assert not torch.equal(other.graph.col, small.graph.col)
    assert not torch.equal(other.y, small.y)


def test_simple_undirected_graph_with_exact_edge_count(small):
    g = small.graph
    assert g.num_nodes == 2000 and g.col.dtype == torch.int32
    assert g.num_edges == 2 * round(2000 * 20.0 / 2)  # top-up rounds reach the target
    ei = g.edge_index()
    counts = torch.zeros(2000, 2000, dtype=torch.long)
    counts.index_put_((ei[0], ei[1]), torch.ones(ei.size(1), dtype=torch.long), accumulate=True)
    assert int(counts.max()) == 1, "duplicate edge"
    assert int(counts.diagonal().sum()) == 0, "self-loop"
    assert torch.equal(counts, counts.T), "not symmetric"
    deg = g.degree().double()
    assert float(deg.mean()) == pytest.approx(20.0)
    assert float(deg.max()) > 5 * float(deg.mean())  # heavy-tailed degrees


def test_labels_and_splits(small):
    assert small.num_classes == 10 and small.y.dtype == torch.long
    assert torch.equal(torch.unique(small.y), torch.arange(10))
    assert small.train_idx.numel() == 160 and small.valid_idx.numel() == 40
    allidx = torch.cat([small.train_idx, small.valid_idx, small.test_idx])
    assert torch.equal(allidx.sort().values, torch.arange(2000))  # disjoint and complete
    assert small.x is None and small.ogb_name is None
    assert small.name == "synthetic:nodes=2000,degree=20.0,classes=10,community_size=50"


def neighbour_majority_accuracy(ds) -> float:
    """Oracle of "structure predicts labels": predict each node's label as the most common
    label among its neighbours (a Python loop over nodes)."""
    g, correct = ds.graph, 0
    for v in range(g.num_nodes):
        nbr = ds.y[g.col[g.rowptr[v]:g.rowptr[v + 1]].long()]
        correct += int(nbr.numel() > 0 and torch.bincount(nbr).argmax() == ds.y[v])
    return correct / g.num_nodes


def test_structure_predicts_labels(small):
    largest_class = float(torch.bincount(small.y).max()) / small.num_nodes
    acc = neighbour_majority_accuracy(small)
    assert acc > 0.8 and acc > 2 * largest_class
    assert small.edge_homophily() > 0.55
    # Without the hierarchy the same degrees and labels carry no signal.
    flat = synthetic_graph(**SMALL, p_community=0.0, p_class=0.0, p_group=0.0)
    share = torch.bincount(flat.y).double() / flat.num_nodes
    assert flat.edge_homophily() == pytest.approx(float((share ** 2).sum()), abs=0.05)
    assert neighbour_majority_accuracy(flat) < 0.6 * acc


def test_label_noise_stays_in_group():
    # classes=4, groups=2: group 0 = classes {0, 1}, group 1 = {2, 3}. With full noise and
    # edges only inside communities, a node's neighbours share its group but not its class.
    ds = synthetic_graph(nodes=1000, degree=10.0, classes=4, groups=2, community_size=40,
                         p_community=1.0, p_class=0.0, p_group=0.0, label_noise=1.0)
    ei = ds.graph.edge_index()
    group = ds.y // 2
    assert torch.equal(group[ei[0]], group[ei[1]])
    assert 0.4 < float((ds.y[ei[0]] == ds.y[ei[1]]).double().mean()) < 0.6


def test_config_from_string():
    cfg = SyntheticConfig.from_string("nodes=5000, degree=12.5,classes=7,seed=3")
    assert (cfg.nodes, cfg.degree, cfg.classes, cfg.seed, cfg.num_groups) == (5000, 12.5, 7, 3, 3)
    assert isinstance(cfg.nodes, int) and isinstance(cfg.degree, float)
    assert SyntheticConfig.from_string("") == SyntheticConfig()
    with pytest.raises(ValueError, match=r"'colour=3' is not key=value with key in"):
        SyntheticConfig.from_string("colour=3")
    with pytest.raises(ValueError, match=r"'nodes=1.5': '1.5' is not a valid int"):
        SyntheticConfig.from_string("nodes=1.5")
    with pytest.raises(ValueError, match="'nodes' is not key=value"):
        SyntheticConfig.from_string("nodes")


@pytest.mark.parametrize("kwargs, match", [
    (dict(classes=0), "'SyntheticConfig' needs a positive integer classes, got 0"),
    (dict(max_degree=0), "'SyntheticConfig' needs a positive integer max_degree, got 0"),
    (dict(nodes=10, classes=6), "nodes must be >= 2 \\* classes = 12, got nodes=10"),
    (dict(classes=4, groups=5), r"groups must lie in \[1, classes=4\], got 5"),
    (dict(p_community=0.7, p_class=0.2, p_group=0.2),
     r"p_community \+ p_class \+ p_group must be <= 1, got 1.1"),
    (dict(label_noise=1.5), r"label_noise must lie in \[0, 1\], got 1.5"),
    (dict(degree_exponent=2.0), "degree_exponent must be > 2"),
    (dict(nodes=100, classes=2, degree=60.0), r"degree must lie in \(0, \(nodes - 1\) / 2"),
    (dict(community_size=1), "community_size must be >= 2, got 1"),
    (dict(train_frac=0.9, valid_frac=0.2), "train_frac \\+ valid_frac must be <= 1"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticConfig(**kwargs)


def test_unknown_override():
    with pytest.raises(TypeError, match=r"unknown parameters \['colour'\]"):
        synthetic_graph(nodes=2000, colour=3)


def test_many_small_chunks(monkeypatch):
    # Products scale draws in chunks and top-up rounds: exercise both on a small graph.
    monkeypatch.setattr(synthetic, "_CHUNK", 300)
    ds = synthetic_graph(nodes=600, degree=30.0, classes=3, community_size=30)
    assert ds.graph.num_edges == 2 * 9000
    ei = ds.graph.edge_index()
    assert bool((ei[0] != ei[1]).all())
    assert torch.unique(ei[0] * 600 + ei[1]).numel() == ei.size(1)


def test_merge_new_is_sorted_union(monkeypatch):
    monkeypatch.setattr(synthetic, "_CHUNK", 16)  # old keys placed in many blocks
    gen = torch.Generator().manual_seed(0)
    keys = torch.unique(torch.randint(0, 500, (200,), generator=gen))
    more = torch.unique(torch.randint(0, 600, (150,), generator=gen))
    assert torch.equal(synthetic._merge_new(keys, more), torch.unique(torch.cat([keys, more])))
    assert torch.equal(synthetic._merge_new(keys[:0], more), more)


def test_drop_random_is_uniform():
    keys = torch.arange(10) * 3
    gen = torch.Generator().manual_seed(0)
    dropped = torch.zeros(10)
    for _ in range(2000):
        kept = synthetic._drop_random(keys.clone(), 4, gen)  # works in place
        assert kept.numel() == 6 and bool((kept[1:] > kept[:-1]).all())
        assert bool(torch.isin(kept, keys).all())
        dropped += ~torch.isin(keys, kept)
    # Each key is dropped with probability 4/10: 800 expected of 2000, std ~22.
    assert float((dropped - 800).abs().max()) < 110
    assert torch.equal(synthetic._drop_random(keys, 0, gen), keys)


def test_sort_unique_and_compact_work_in_place(monkeypatch):
    monkeypatch.setattr(synthetic, "_CHUNK", 7)  # many blocks, the last one partial
    gen = torch.Generator().manual_seed(0)
    keys = torch.randint(0, 60, (200,), generator=gen)
    buf = keys.clone()
    out = synthetic._sort_unique(buf)
    assert torch.equal(out, torch.unique(keys)) and out.data_ptr() == buf.data_ptr()
    keep = torch.rand(200, generator=gen) < 0.3
    buf = keys.clone()
    out = synthetic._compact(buf, keep)
    assert torch.equal(out, keys[keep]) and out.data_ptr() == buf.data_ptr()
    assert synthetic._sort_unique(torch.zeros(0, dtype=torch.long)).numel() == 0
