"""The OGB raw-file reader on tiny datasets written in OGB's exact raw layouts, offline."""
import builtins
import pickle
import urllib.error
import urllib.request
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from gnn_tt.data import load_dataset, ogb
from gnn_tt.data.ogb import dataset_dir, load_ogb, required_files

N = 7
EDGES = np.array([[0, 1, 2, 3, 5, 1], [1, 2, 3, 0, 6, 0]])  # (1, 0) repeats (0, 1)
SPLIT = {"train": [0, 1, 2], "valid": [3], "test": [4, 5, 6]}
FEATURES = np.arange(N * 3, dtype=np.float64).reshape(N, 3) / 4


def write_csv(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(array).to_csv(path, header=False, index=False, compression="gzip")


def write_csv_dataset(root, name, split_type, year=False, edges=EDGES, features=None,
                      labels=None, split=SPLIT):
    """ogbn-arxiv / ogbn-products layout: ``raw/*.csv.gz`` (one row per edge / node, no
    header) and ``split/<split_type>/{train,valid,test}.csv.gz``."""
    folder = dataset_dir(name, root)
    raw = folder / "raw"
    labels = np.arange(N) % 3 if labels is None else labels
    n = len(labels)
    write_csv(raw / "edge.csv.gz", edges.T)
    write_csv(raw / "num-node-list.csv.gz", np.array([[n]]))
    write_csv(raw / "num-edge-list.csv.gz", np.array([[edges.shape[1]]]))
    write_csv(raw / "node-feat.csv.gz", FEATURES if features is None else features)
    write_csv(raw / "node-label.csv.gz", labels[:, None])
    if year:
        write_csv(raw / "node_year.csv.gz", np.full((n, 1), 2019))
    for key, ids in split.items():
        write_csv(folder / "split" / split_type / f"{key}.csv.gz", np.array(ids)[:, None])
    return folder


def write_papers_dataset(root):
    """ogbn-papers100M layout: ``raw/data.npz`` and ``raw/node-label.npz`` (NaN labels for
    unlabelled nodes), split CSVs under ``split/time``."""
    folder = dataset_dir("ogbn-papers100M", root)
    (folder / "raw").mkdir(parents=True)
    np.savez(folder / "raw" / "data.npz", edge_index=EDGES,
             num_nodes_list=np.array([N]), num_edges_list=np.array([EDGES.shape[1]]),
             node_feat=np.ones((N, 2), dtype=np.float16), node_year=np.full((N, 1), 2019))
    label = np.full((N, 1), np.nan, dtype=np.float32)
    label[SPLIT["train"] + SPLIT["valid"] + SPLIT["test"][:1], 0] = [5, 171, 0, 3, 9]
    np.savez(folder / "raw" / "node-label.npz", node_label=label)
    for key, ids in SPLIT.items():
        ids = ids[:1] if key == "test" else ids
        write_csv(folder / "split" / "time" / f"{key}.csv.gz", np.array(ids)[:, None])
    return folder


@pytest.fixture(autouse=True)
def no_prompt_no_network(monkeypatch, tmp_path_factory):
    """Any input() or network access fails the test instead of hanging it; the dataset
    cache lives in a temporary folder."""
    def prompt(*args):
        raise AssertionError(f"ogb prompted: {args}")

    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("offline test")
    monkeypatch.setattr(builtins, "input", prompt)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setenv("GNN_TT_CACHE", str(tmp_path_factory.mktemp("dataset_cache")))


def expected_adjacency():
    adj = torch.zeros(N, N, dtype=torch.bool)
    adj[EDGES[0], EDGES[1]] = True
    return adj | adj.T


def adjacency(graph):
    adj = torch.zeros(N, N, dtype=torch.bool)
    ei = graph.edge_index()
    adj[ei[0], ei[1]] = True
    return adj


def no_read(*args):
    raise AssertionError("the raw files were read again instead of the cache")


def assert_tiny(ds, name):
    """``ds`` against what write_csv_dataset wrote (the independent oracle)."""
    assert ds.name == ds.ogb_name == name and ds.num_nodes == N
    assert ds.num_classes == (40 if name == "ogbn-arxiv" else 47)
    assert torch.equal(adjacency(ds.graph), expected_adjacency())
    assert ds.graph.num_edges == 10 and ds.graph.col.dtype == torch.int32
    assert torch.equal(ds.y, torch.arange(N) % 3)
    assert torch.equal(ds.train_idx, torch.tensor(SPLIT["train"]))
    assert torch.equal(ds.valid_idx, torch.tensor(SPLIT["valid"]))
    assert torch.equal(ds.test_idx, torch.tensor(SPLIT["test"]))
    assert ds.x.dtype == torch.float32 and torch.equal(ds.x, torch.from_numpy(FEATURES).float())


@pytest.mark.parametrize("name, split_type, year", [
    ("ogbn-arxiv", "time", True), ("ogbn-products", "sales_ranking", False)])
def test_csv_layout_loads_and_reloads_from_the_cache(tmp_path, monkeypatch, name, split_type,
                                                     year):
    folder = write_csv_dataset(tmp_path, name, split_type, year)
    assert_tiny(load_ogb(name, tmp_path), name)  # uncached
    first = load_dataset(name, root=tmp_path)
    monkeypatch.setattr(ogb, "read_raw", no_read)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = load_dataset(name, root=tmp_path)
    for ds in (first, second):
        assert_tiny(ds, name)
    # Neither ogb's pickled cache nor its release marker is written any more.
    assert not (folder / "processed").exists()
    assert not (folder / "RELEASE_v1.txt").exists()


def random_graph(seed, n=40, e=150):
    """Edges with duplicates, reversed pairs and self-loops, labels, features, a split."""
    gen = np.random.default_rng(seed)
    edges = gen.integers(0, n, size=(2, e))
    edges[:, :10] = edges[::-1, 10:20]  # reversed duplicates
    edges[1, 20:25] = edges[0, 20:25]  # self-loops
    labels = gen.integers(0, 40, size=n)
    features = gen.standard_normal((n, 5)).round(3)
    ids = gen.permutation(n)
    split = {"train": ids[:10], "valid": ids[10:15], "test": ids[15:]}
    return edges, labels, features, split


def oracle_neighbours(edges, n):
    """Sorted neighbour lists by plain Python: symmetrized, no self-loops, no duplicates."""
    sets = [set() for _ in range(n)]
    for a, b in edges.T.tolist():
        if a != b:
            sets[a].add(b)
            sets[b].add(a)
    return [sorted(s) for s in sets]


@pytest.mark.parametrize("chunk_values", [1 << 23, 7])
def test_raw_reader_equals_an_oracle(tmp_path, monkeypatch, chunk_values):
    monkeypatch.setattr(ogb, "_CSV_CHUNK_VALUES", chunk_values)  # 7: many partial chunks
    edges, labels, features, split = random_graph(seed=4)
    write_csv_dataset(tmp_path, "ogbn-arxiv", "time", year=True, edges=edges,
                      features=features, labels=labels, split=split)
    ds = load_ogb("ogbn-arxiv", tmp_path)
    g = ds.graph
    got = [g.col[g.rowptr[v]:g.rowptr[v + 1]].tolist() for v in range(g.num_nodes)]
    assert got == oracle_neighbours(edges, 40)
    assert ds.y.tolist() == labels.tolist()
    assert torch.equal(ds.x, torch.from_numpy(features).float())
    for key in ("train", "valid", "test"):
        assert getattr(ds, f"{key}_idx").tolist() == split[key].tolist()


def test_changed_raw_file_makes_the_cache_stale(tmp_path):
    edges, labels, features, split = random_graph(seed=5)
    args = dict(year=True, edges=edges, features=features, split=split)
    write_csv_dataset(tmp_path, "ogbn-arxiv", "time", labels=labels, **args)
    assert load_dataset("ogbn-arxiv", root=tmp_path).y.tolist() == labels.tolist()
    labels[:3] = [7, 8, 9]
    write_csv_dataset(tmp_path, "ogbn-arxiv", "time", labels=labels, **args)
    # Any rewritten file may be named first: gzip headers hold the time of writing.
    with pytest.warns(RuntimeWarning, match=r"dataset cache .*ogbn-arxiv-.*: stale: source "
                                            r"file .*ogbn_arxiv/.*\.csv\.gz changed"):
        assert load_dataset("ogbn-arxiv", root=tmp_path).y.tolist() == labels.tolist()


@pytest.mark.parametrize("bad, match", [
    ("rows", r"edge.csv.gz: cannot read it \(more than the 5 rows expected\)"),
    ("ids", r"edge.csv.gz: edge_index holds node id 9, outside \[0, num_nodes=7\)"),
    ("labels", r"node-label.csv.gz: cannot read it"),
])
def test_bad_raw_files_are_named(tmp_path, bad, match):
    folder = write_csv_dataset(tmp_path, "ogbn-products", "sales_ranking")
    raw = folder / "raw"
    if bad == "rows":
        write_csv(raw / "num-edge-list.csv.gz", np.array([[5]]))
    elif bad == "ids":
        write_csv(raw / "edge.csv.gz", np.array([[0, 9], [1, 2]]))
        write_csv(raw / "num-edge-list.csv.gz", np.array([[2]]))
    else:
        (raw / "node-label.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=match):
        load_dataset("ogbn-products", root=tmp_path)


class Marker:
    """Unpickling this creates a file: the stand-in for code a pickle could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickles_in_the_data_folder_are_never_loaded(tmp_path):
    folder = write_csv_dataset(tmp_path, "ogbn-arxiv", "time", year=True)
    marker = tmp_path / "pickle_ran"
    payload = pickle.dumps({"graph": Marker(marker), "labels": Marker(marker)})
    # Where ogb's loader (and this project's former one, through torch.load) read pickles.
    (folder / "processed").mkdir()
    (folder / "processed" / "data_processed").write_bytes(payload)
    (folder / "split" / "time" / "split_dict.pt").write_bytes(payload)
    assert_tiny(load_dataset("ogbn-arxiv", root=tmp_path), "ogbn-arxiv")
    assert_tiny(load_ogb("ogbn-arxiv", tmp_path), "ogbn-arxiv")
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: it runs when unpickled
    assert marker.exists()


def test_papers100m_object_array_is_refused(tmp_path):
    folder = write_papers_dataset(tmp_path)
    marker = tmp_path / "pickle_ran"
    data = dict(np.load(folder / "raw" / "data.npz"))
    data["node_feat"] = np.array([Marker(marker)] * N, dtype=object)
    np.savez(folder / "raw" / "data.npz", **data)
    with pytest.raises(ValueError, match=r"npz file .*data.npz: 'node_feat' is an object array"):
        load_dataset("ogbn-papers100M", root=tmp_path)
    assert not marker.exists()


def test_papers100m_binary_layout_nan_labels(tmp_path, monkeypatch):
    write_papers_dataset(tmp_path)
    monkeypatch.setenv("GNN_TT_DATA", str(tmp_path))  # the default root
    first = load_dataset("ogbn-papers100M")
    monkeypatch.setattr(ogb, "read_raw", no_read)
    for ds in (first, load_dataset("ogbn-papers100M")):
        assert ds.num_classes == 172 and ds.ogb_name == "ogbn-papers100M"
        assert torch.equal(ds.y, torch.tensor([5, 171, 0, 3, 9, -1, -1]))
        assert torch.equal(adjacency(ds.graph), expected_adjacency())
        assert torch.equal(ds.test_idx, torch.tensor([4]))
        assert ds.x.dtype == torch.float16 and ds.x.shape == (N, 2)
        assert ds.summary()["labelled"] == 5


def test_absent_dataset_offline_says_where_to_put_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot be downloaded") as info:
        load_dataset("ogbn-products", root=tmp_path)
    msg = str(info.value)
    assert "products.zip" in msg and "move its folder 'products'" in msg
    assert str(tmp_path / "ogbn_products" / "raw" / "edge.csv.gz") in msg
    assert str(tmp_path / "ogbn_products" / "split" / "sales_ranking" / "train.csv.gz") in msg
    with pytest.raises(FileNotFoundError, match=r"download disabled.*papers100M-bin.zip"):
        load_ogb("ogbn-papers100M", tmp_path, download=False)


def test_incomplete_dataset_lists_missing_files(tmp_path):
    folder = write_csv_dataset(tmp_path, "ogbn-arxiv", "time", year=False)
    with pytest.raises(FileNotFoundError, match=r"lacks \['raw/node_year.csv.gz'\]"):
        load_ogb("ogbn-arxiv", tmp_path)
    (folder / "split" / "time" / "valid.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="'split/time/valid.csv.gz'"):
        load_ogb("ogbn-arxiv", tmp_path)


def test_required_files():
    assert required_files("ogbn-papers100M") == [
        "raw/data.npz", "raw/node-label.npz", "split/time/train.csv.gz",
        "split/time/valid.csv.gz", "split/time/test.csv.gz"]
    assert "raw/node_year.csv.gz" in required_files("ogbn-arxiv")
    with pytest.raises(ValueError, match="unknown OGB node dataset 'ogbn-cora'"):
        required_files("ogbn-cora")
