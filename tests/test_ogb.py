"""ogb's real loader on tiny datasets written in OGB's exact raw layouts, offline."""
import builtins
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
import torch

from gnn_tt.data import load_dataset
from gnn_tt.data.ogb import dataset_dir, load_ogb, required_files

N = 7
EDGES = np.array([[0, 1, 2, 3, 5, 1], [1, 2, 3, 0, 6, 0]])  # (1, 0) repeats (0, 1)
SPLIT = {"train": [0, 1, 2], "valid": [3], "test": [4, 5, 6]}


def write_csv(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(array).to_csv(path, header=False, index=False, compression="gzip")


def write_csv_dataset(root, name, split_type, year=False):
    """ogbn-arxiv / ogbn-products layout: ``raw/*.csv.gz`` (one row per edge / node, no
    header) and ``split/<split_type>/{train,valid,test}.csv.gz``."""
    folder = dataset_dir(name, root)
    raw = folder / "raw"
    write_csv(raw / "edge.csv.gz", EDGES.T)
    write_csv(raw / "num-node-list.csv.gz", np.array([[N]]))
    write_csv(raw / "num-edge-list.csv.gz", np.array([[EDGES.shape[1]]]))
    write_csv(raw / "node-feat.csv.gz", np.arange(N * 3, dtype=np.float64).reshape(N, 3) / 4)
    write_csv(raw / "node-label.csv.gz", (np.arange(N) % 3)[:, None])
    if year:
        write_csv(raw / "node_year.csv.gz", np.full((N, 1), 2019))
    for key, ids in SPLIT.items():
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
def no_prompt_no_network(monkeypatch):
    """Any input() or network access fails the test instead of hanging it."""
    def prompt(*args):
        raise AssertionError(f"ogb prompted: {args}")

    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("offline test")
    monkeypatch.setattr(builtins, "input", prompt)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def expected_adjacency():
    adj = torch.zeros(N, N, dtype=torch.bool)
    adj[EDGES[0], EDGES[1]] = True
    return adj | adj.T


def adjacency(graph):
    adj = torch.zeros(N, N, dtype=torch.bool)
    ei = graph.edge_index()
    adj[ei[0], ei[1]] = True
    return adj


@pytest.mark.parametrize("name, split_type, year", [
    ("ogbn-arxiv", "time", True), ("ogbn-products", "sales_ranking", False)])
def test_csv_layout_loads_and_reloads(tmp_path, name, split_type, year):
    folder = write_csv_dataset(tmp_path, name, split_type, year)
    first = load_dataset(name, root=tmp_path)
    # Second load goes through ogb's processed/ cache (the torch >= 2.6 weights_only trap).
    assert (folder / "processed" / "data_processed").exists()
    assert (folder / "RELEASE_v1.txt").exists()
    second = load_ogb(name, tmp_path)
    for ds in (first, second):
        assert ds.name == ds.ogb_name == name and ds.num_nodes == N
        assert ds.num_classes == (40 if name == "ogbn-arxiv" else 47)
        assert torch.equal(adjacency(ds.graph), expected_adjacency())
        assert ds.graph.num_edges == 10
        assert torch.equal(ds.y, torch.arange(N) % 3)
        assert torch.equal(ds.train_idx, torch.tensor(SPLIT["train"]))
        assert torch.equal(ds.valid_idx, torch.tensor(SPLIT["valid"]))
        assert torch.equal(ds.test_idx, torch.tensor(SPLIT["test"]))
        assert torch.allclose(ds.x, torch.arange(N * 3, dtype=torch.float32).view(N, 3) / 4)


def test_papers100m_binary_layout_nan_labels(tmp_path, monkeypatch):
    write_papers_dataset(tmp_path)
    monkeypatch.setenv("GNN_TT_DATA", str(tmp_path))  # the default root
    for ds in (load_dataset("ogbn-papers100M"), load_dataset("ogbn-papers100M")):
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
