import numpy as np
import pytest
import torch

from gnn_tt.data import CSRGraph, GraphDataset, dataset_names, load_dataset, synthetic_graph
from gnn_tt.data.npz import load_npz, stratified_split

EDGES = np.array([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 0]])  # a 5-cycle plus a self-loop


@pytest.fixture(autouse=True)
def dataset_cache(monkeypatch, tmp_path_factory):
    """load_dataset caches into a temporary folder, not ./cache/datasets."""
    monkeypatch.setenv("GNN_TT_CACHE", str(tmp_path_factory.mktemp("dataset_cache")))


def write_npz(path, **arrays):
    base = dict(edge_index=EDGES, y=np.array([0, 1, 1, 0, 2]))
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def test_npz_with_splits_and_features(tmp_path):
    x = np.arange(10, dtype=np.float64).reshape(5, 2)
    path = write_npz(tmp_path / "g.npz", num_nodes=np.array(5), x=x,
                     train_idx=np.array([0, 1]), valid_idx=np.array([2]),
                     test_idx=np.array([3, 4]))
    ds = load_dataset(f"npz:{path}")
    assert ds.name == f"npz:{path}" and ds.num_nodes == 5 and ds.num_classes == 3
    assert ds.graph.num_edges == 10  # the self-loop is dropped, each edge stored twice
    assert sorted(ds.graph.col[ds.graph.rowptr[0]:ds.graph.rowptr[1]].tolist()) == [1, 4]
    assert torch.equal(ds.y, torch.tensor([0, 1, 1, 0, 2]))
    assert torch.equal(ds.train_idx, torch.tensor([0, 1]))
    assert torch.equal(ds.test_idx, torch.tensor([3, 4]))
    assert ds.x.dtype == torch.float32 and torch.equal(ds.x, torch.from_numpy(x).float())


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int16])
def test_npz_edge_index_dtypes(tmp_path, dtype):
    ref = load_npz(write_npz(tmp_path / "ref.npz"))
    ds = load_npz(write_npz(tmp_path / "g.npz", edge_index=EDGES.astype(dtype)))
    assert torch.equal(ds.graph.rowptr, ref.graph.rowptr)
    assert torch.equal(ds.graph.col, ref.graph.col) and ds.graph.col.dtype == torch.int32


def test_stratified_split_per_class_brute_force():
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 3 + [-1] * 4 + [3] * 1)
    y = y[torch.randperm(y.numel(), generator=torch.Generator().manual_seed(5))]
    train, valid, test = stratified_split(y, seed=2)
    ids = torch.cat([train, valid, test])
    assert torch.equal(ids.sort().values, torch.nonzero(y >= 0).view(-1))  # disjoint, complete
    expected = {0: (6, 2, 2), 1: (3, 1, 1), 2: (1, 1, 1), 3: (0, 1, 0)}
    for c, sizes in expected.items():
        got = tuple(sum(int(y[i]) == c for i in split.tolist()) for split in (train, valid, test))
        assert got == sizes, f"class {c}"
    again = stratified_split(y, seed=2)
    other = stratified_split(y, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((train, valid, test), again))
    assert not torch.equal(train, other[0])


def test_npz_without_splits_uses_stratified_split(tmp_path):
    ds = load_npz(write_npz(tmp_path / "g.npz", y=np.array([0, 0, 0, 1, -1])), seed=1)
    assert ds.num_classes == 2
    assert int(ds.train_idx.numel() + ds.valid_idx.numel() + ds.test_idx.numel()) == 4
    assert 4 not in torch.cat([ds.train_idx, ds.valid_idx, ds.test_idx]).tolist()


def test_npz_cora(shared_data):
    ds = load_dataset(f"npz:{shared_data / 'cora.npz'}")
    assert ds.num_nodes == 2708 and ds.num_classes == 7 and ds.x is None
    assert ds.graph.num_edges == 10556  # cora's 5,278 undirected edges
    total = ds.train_idx.numel() + ds.valid_idx.numel() + ds.test_idx.numel()
    assert total == 2708 and ds.train_idx.numel() == 1618


@pytest.mark.parametrize("arrays, match", [
    (dict(y=None), r"missing key\(s\) \['y'\]"),
    (dict(edge_index=np.array([[0, 5], [1, 2]])), r"node id 5, outside \[0, num_nodes=5\)"),
    (dict(edge_index=np.array([[0, -2], [1, 2]])), r"negative node id \(-2\)"),
    (dict(num_nodes=np.array(6)), "'y' has 5 labels but num_nodes = 6"),
    (dict(edge_index=np.array([0, 1, 2])), r"'edge_index' must have shape \[2, E\], got \[3\]"),
    (dict(edge_index=EDGES.astype(np.float32)), "'edge_index' must hold integers"),
    (dict(y=np.array([0, 1, -3, 0, 0])), "'y' holds -3"),
    (dict(y=np.full(5, -1)), "'y' has no labelled node"),
    (dict(train_idx=np.array([0])), r"give all of \['train_idx', 'valid_idx', 'test_idx'\]"),
    (dict(train_idx=np.array([9]), valid_idx=np.array([1]), test_idx=np.array([2])),
     r"'train_idx' holds ids outside \[0, num_nodes=5\)"),
    (dict(x=np.zeros((4, 2))), r"'x' must have shape \[num_nodes=5, F\], got \[4, 2\]"),
])
def test_npz_bad_files(tmp_path, arrays, match):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match) as info:
        load_dataset(f"npz:{path}")
    assert str(path) in str(info.value)


def test_npz_unreadable(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=f"npz file {path}: cannot read it"):
        load_npz(path)
    with pytest.raises(ValueError, match="cannot read it"):
        load_npz(tmp_path / "absent.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        load_npz(tmp_path / "one.npy")


def test_synthetic_names():
    ds = load_dataset("synthetic:nodes=1500,degree=8,classes=6,seed=4")
    ref = synthetic_graph(nodes=1500, degree=8.0, classes=6, seed=4)
    assert ds.name == ref.name == "synthetic:nodes=1500,degree=8.0,classes=6,seed=4"
    assert torch.equal(ds.graph.col, ref.graph.col) and torch.equal(ds.y, ref.y)


def test_unknown_name_lists_forms():
    assert dataset_names() == ["ogbn-products", "ogbn-arxiv", "ogbn-papers100M",
                               "synthetic-products", "synthetic:key=value,...", "npz:PATH"]
    with pytest.raises(ValueError, match=r"unknown dataset 'cora'; valid forms: ogbn-products"
                                         r".*npz:PATH"):
        load_dataset("cora")
    with pytest.raises(TypeError, match="dataset name must be a str, got int"):
        load_dataset(3)


def tiny_dataset(**kw) -> GraphDataset:
    graph = CSRGraph.from_edge_index(torch.tensor([[0, 1, 2, 0], [1, 2, 3, 3]]), 4)
    args = dict(name="tiny", graph=graph, y=torch.tensor([0, 0, 1, -1]),
                train_idx=torch.tensor([0]), valid_idx=torch.tensor([1]),
                test_idx=torch.tensor([2]), num_classes=2)
    args.update(kw)
    return GraphDataset(**args)


def test_graph_dataset_summary_and_repr():
    ds = tiny_dataset()
    assert ds.num_nodes == 4 and ds.num_features == 0
    # Labelled-labelled edges: 0-1 (same), 1-2 (different); 2-3 and 0-3 touch y = -1.
    assert ds.edge_homophily() == pytest.approx(0.5)
    s = ds.summary()
    assert (s["num_edges"], s["labelled"], s["max_degree"], s["mean_degree"]) == (4, 3, 2, 2.0)
    assert repr(ds) == ("GraphDataset(tiny, num_nodes=4, num_edges=4, num_classes=2, "
                        "num_features=0, train=1, valid=1, test=1)")


@pytest.mark.parametrize("kw, match", [
    (dict(y=torch.tensor([0, 1, 2, 0])), r"y must lie in \[-1, num_classes=2\), got \[0, 2\]"),
    (dict(y=torch.tensor([0, 1])), r"y must be int64 of shape \[4\]"),
    (dict(train_idx=torch.tensor([4])), r"train_idx holds ids outside \[0, 4\)"),
    (dict(test_idx=torch.tensor([0.0])), "test_idx must be a 1-D int64 tensor"),
    (dict(x=torch.zeros(3, 2)), r"x must be a float \[4, F\] tensor"),
    (dict(num_classes=0), "num_classes must be >= 1, got 0"),
])
def test_graph_dataset_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_dataset(**kw)


def test_edge_homophily_in_chunks_matches_loop(monkeypatch):
    ds = synthetic_graph(nodes=300, degree=6.0, classes=4, community_size=20, seed=2)
    ds.y[::7] = -1
    g, same, total = ds.graph, 0, 0
    for v in range(ds.num_nodes):
        for u in g.col[g.rowptr[v]:g.rowptr[v + 1]].tolist():
            if ds.y[v] >= 0 and ds.y[u] >= 0:
                total += 1
                same += int(ds.y[v] == ds.y[u])
    monkeypatch.setattr("gnn_tt.data.dataset._EDGE_CHUNK", 37)  # many uneven chunks
    assert ds.edge_homophily() == pytest.approx(same / total)
