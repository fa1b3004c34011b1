import warnings

import pytest
import torch

import partition.assign
from partition import assign_rows


def _graph() -> tuple[torch.Tensor, int]:
    """A random graph with isolated nodes (ids 180..229 have no edges)."""
    return torch.randint(0, 180, (2, 600), generator=torch.Generator().manual_seed(0)), 230


def test_cache_round_trip_skips_recomputation(tmp_path, monkeypatch):
    ei, n = _graph()
    first = assign_rows(ei, n, (6, 7, 6), seed=3, cache_dir=tmp_path)
    assert not first.stats["cache_hit"]
    files = list(tmp_path.glob("rows-hierarchical-*.pt"))
    assert len(files) == 1

    def boom(*args, **kwargs):
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(partition.assign, "hierarchical_rows", boom)
    second = assign_rows(ei, n, (6, 7, 6), seed=3, cache_dir=tmp_path)
    assert second.stats["cache_hit"]
    assert torch.equal(first.row_of_node, second.row_of_node)
    assert second.stats["edge_cut"] == first.stats["edge_cut"]
    assert second.stats["moved"] == first.stats["moved"]
    # Any other parameter is another key: a miss (which here would recompute).
    with pytest.raises(AssertionError, match="recomputed"):
        assign_rows(ei, n, (6, 7, 6), seed=4, cache_dir=tmp_path)


def test_corrupt_cache_warns_and_recomputes(tmp_path):
    ei, n = _graph()
    good = assign_rows(ei, n, (6, 7, 6), cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.pt")
    path.write_bytes(b"not a torch file" * 10)
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = assign_rows(ei, n, (6, 7, 6), cache_dir=tmp_path)
    assert not again.stats["cache_hit"]
    assert torch.equal(good.row_of_node, again.row_of_node)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file is valid again
        assert assign_rows(ei, n, (6, 7, 6), cache_dir=tmp_path).stats["cache_hit"]


def test_tampered_cache_is_not_trusted(tmp_path):
    ei, n = _graph()
    good = assign_rows(ei, n, (6, 7, 6), cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.pt")
    obj = torch.load(path, weights_only=True)
    obj["row_of_node"] = obj["row_of_node"].flip(0)
    torch.save(obj, path)
    with pytest.warns(RuntimeWarning, match="does not match its digest"):
        again = assign_rows(ei, n, (6, 7, 6), cache_dir=tmp_path)
    assert torch.equal(good.row_of_node, again.row_of_node)
    obj = torch.load(path, weights_only=True)
    obj["params"]["seed"] = 9
    torch.save(obj, path)
    with pytest.warns(RuntimeWarning, match="written for other inputs"):
        assign_rows(ei, n, (6, 7, 6), cache_dir=tmp_path)
