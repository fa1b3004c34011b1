"""The dataset cache: round trips, damaged and stale entries, no pickle, memory warnings."""
import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_tt.data import cache, load_dataset, registry, synthetic_graph
from gnn_tt.data.cache import DatasetSource, entry_dir, load_cached, warn_if_short
from gnn_tt.data.npz import load_npz
from gnn_tt.data.synthetic import SyntheticConfig

SPEC = "synthetic:nodes=600,degree=8,classes=4,community_size=30,seed=3"
CONFIG = SyntheticConfig.from_string(SPEC[len("synthetic:"):])


def assert_same(a, b):
    """Same name, CSR, labels, splits, features, classes; dtypes included."""
    assert (a.name, a.num_classes, a.ogb_name, a.num_nodes) == \
        (b.name, b.num_classes, b.ogb_name, b.num_nodes)
    pairs = [(a.graph.rowptr, b.graph.rowptr), (a.graph.col, b.graph.col), (a.y, b.y),
             (a.train_idx, b.train_idx), (a.valid_idx, b.valid_idx), (a.test_idx, b.test_idx)]
    assert (a.x is None) == (b.x is None)
    if a.x is not None:
        pairs.append((a.x, b.x))
    for s, t in pairs:
        assert s.dtype == t.dtype and torch.equal(s, t)


def only_entry(cache_dir: Path) -> Path:
    entries = [p for p in cache_dir.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1, entries
    return entries[0]


def no_build():
    raise AssertionError("the dataset was rebuilt instead of mapped from the cache")


@pytest.fixture
def cached_synthetic(tmp_path):
    """A synthetic dataset loaded once (entry written); returns (cache_dir, the reference)."""
    ref = synthetic_graph(CONFIG, progress=False)
    load_dataset(SPEC, cache_dir=tmp_path)
    return tmp_path, ref


def test_synthetic_round_trip_maps_without_rebuilding(cached_synthetic, monkeypatch):
    cache_dir, ref = cached_synthetic
    entry = only_entry(cache_dir)
    assert entry.name.startswith("synthetic-")
    assert sorted(p.name for p in entry.iterdir()) == [
        "col.npy", "manifest.json", "rowptr.npy", "test_idx.npy", "train_idx.npy",
        "valid_idx.npy", "y.npy"]
    # The files are plain arrays equal to the generator's output (the independent oracle).
    assert np.array_equal(np.load(entry / "col.npy", allow_pickle=False), ref.graph.col.numpy())
    assert np.load(entry / "col.npy").dtype == np.int32
    monkeypatch.setattr(registry, "synthetic_graph", lambda *a, **k: no_build())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on a valid entry
        again = load_dataset(SPEC, cache_dir=cache_dir)
    assert_same(again, ref)


def test_writes_to_loaded_tensors_stay_private(cached_synthetic):
    cache_dir, ref = cached_synthetic
    ds = load_dataset(SPEC, cache_dir=cache_dir)
    ds.y[:5] = -1  # copy-on-write mapping: the file is untouched
    ds.graph.col[0] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(load_dataset(SPEC, cache_dir=cache_dir), ref)


def write_npz(path, y=(0, 1, 1, 0, 2, 2)):
    np.savez(path, edge_index=np.array([[0, 1, 2, 3, 4, 5, 0], [1, 2, 3, 4, 5, 0, 0]]),
             y=np.array(y), x=np.arange(12, dtype=np.float64).reshape(6, 2),
             train_idx=np.array([0, 1]), valid_idx=np.array([2]), test_idx=np.array([3, 4]))
    return path


def test_npz_round_trip_and_source_changes(tmp_path):
    path = write_npz(tmp_path / "g.npz")
    cache_dir = tmp_path / "cache"
    first = load_dataset(f"npz:{path}", cache_dir=cache_dir)
    assert_same(first, load_npz(path))  # the uncached loader
    assert first.x.dtype == torch.float32
    assert only_entry(cache_dir).name.startswith("npz-g-npz-")

    # Same bytes, new mtime: the crc32 confirms the entry, no warning, the stat is refreshed.
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(load_dataset(f"npz:{path}", cache_dir=cache_dir), first)
    manifest = json.loads((only_entry(cache_dir) / "manifest.json").read_text())
    assert manifest["source"]["files"][0]["mtime_ns"] == 1_000_000_000

    write_npz(path, y=(0, 1, 1, 0, 2, 1))  # new contents, same size
    with pytest.warns(RuntimeWarning, match=rf"dataset cache .*npz-g-npz-.*: stale: source "
                                            rf"file {path} changed.*; rebuilding"):
        changed = load_dataset(f"npz:{path}", cache_dir=cache_dir)
    assert changed.y.tolist() == [0, 1, 1, 0, 2, 1]
    assert_same(changed, load_npz(path))


def test_npz_missing_file_keeps_the_loader_error(tmp_path):
    with pytest.raises(ValueError, match="npz file .*absent.npz: cannot read it"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}", cache_dir=tmp_path)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, verify, match", [
    (lambda e: os.truncate(e / "col.npy", 200), "auto",
     r"corrupt: col.npy has 200 bytes, expected \d+ \(truncated or replaced\)"),
    (lambda e: flip_byte(e / "col.npy", 1000), "auto", "corrupt: col.npy does not match its "
                                                       "crc32"),
    (lambda e: flip_byte(e / "rowptr.npy", -1), "sample",
     "corrupt: rowptr.npy does not match its sampled crc32"),
    (lambda e: (e / "y.npy").unlink(), "auto", "corrupt: y.npy is missing"),
    (lambda e: (e / "manifest.json").write_text("{not json"), "auto",
     "corrupt: manifest.json is unreadable"),
])
def test_damaged_entry_is_detected_warned_and_rebuilt(cached_synthetic, damage, verify, match):
    cache_dir, ref = cached_synthetic
    damage(only_entry(cache_dir))
    with pytest.warns(RuntimeWarning, match=rf"dataset cache .*synthetic-.*: {match}.*"
                                            rf"rebuilding"):
        rebuilt = load_dataset(SPEC, cache_dir=cache_dir, verify=verify)
    assert_same(rebuilt, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt entry is valid
        assert_same(load_dataset(SPEC, cache_dir=cache_dir, verify="full"), ref)


def test_sample_mode_catches_damage_in_sampled_blocks_only(tmp_path):
    """Documents what "sample" checks: the size always, the bytes at the sampled blocks."""
    big = tmp_path / "big.npy"
    np.save(big, np.arange(1 << 20, dtype=np.int64))  # 8 MiB: sampled, not read in full
    before = cache.sample_crc32(big)
    size = big.stat().st_size
    flip_byte(big, size // 2 + 70_000)  # between two sampled blocks
    assert cache.sample_crc32(big) == before
    flip_byte(big, size - 1)  # inside the last block
    assert cache.sample_crc32(big) != before


def test_stale_loader_version_rebuilds(cached_synthetic, monkeypatch):
    cache_dir, ref = cached_synthetic
    monkeypatch.setattr(registry, "SYNTHETIC_VERSION", registry.SYNTHETIC_VERSION + 1)
    with pytest.warns(RuntimeWarning, match="stale: built by loader version 'synthetic-1/"):
        assert_same(load_dataset(SPEC, cache_dir=cache_dir), ref)
    assert len([p for p in cache_dir.iterdir()]) == 1  # replaced in place, nothing left over


class Marker:
    """Unpickling this creates a file: the stand-in for code a pickle could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_marker_payload_is_live(tmp_path):
    """The payload the no-pickle tests plant does run when unpickled."""
    pickle.loads(pickle.dumps(Marker(tmp_path / "ran")))
    assert (tmp_path / "ran").exists()


def test_object_array_in_the_cache_is_never_unpickled(cached_synthetic):
    cache_dir, ref = cached_synthetic
    entry = only_entry(cache_dir)
    marker = cache_dir.parent / "pickle_ran"
    y_file = entry / "y.npy"
    np.save(y_file, np.array([Marker(marker)] * ref.num_nodes, dtype=object),
            allow_pickle=True)
    # A manifest that agrees with the planted file: only allow_pickle=False stands in the way.
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["arrays"]["y"].update(dtype="object", bytes=y_file.stat().st_size,
                                   crc32=cache.file_crc32(y_file),
                                   sample_crc32=cache.sample_crc32(y_file))
    (entry / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(RuntimeWarning, match="corrupt: y.npy is not a plain array"):
        assert_same(load_dataset(SPEC, cache_dir=cache_dir), ref)
    assert not marker.exists()


def test_memory_check_speaks_before_building(tmp_path, monkeypatch):
    class Tiny:
        available = 1000
    monkeypatch.setattr(cache.psutil, "virtual_memory", lambda: Tiny)
    real, warned_before_build = registry.synthetic_graph, []
    with pytest.warns(RuntimeWarning, match=r'building dataset \{"config":\{.*"nodes":600.*\}\} '
                                            r"needs about \d+\.\d MB of memory, 0\.0 MB are "
                                            r"available: it may run out of memory") as record:
        monkeypatch.setattr(registry, "synthetic_graph", lambda *a, **k: (
            warned_before_build.append(len(record)), real(*a, **k))[1])
        load_dataset(SPEC, cache_dir=tmp_path)
    assert warned_before_build == [1]
    with pytest.warns(RuntimeWarning, match="stage x needs about 2.0 GB of memory, 0.0 MB"):
        assert warn_if_short("stage x", 2 * 10**9) is True
    assert warn_if_short("stage x", 1000) is False


def test_unwritable_cache_warns_and_returns_the_dataset(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="cannot write it.*using the dataset uncached"):
        ds = load_dataset(SPEC, cache_dir=blocker / "sub")
    assert_same(ds, synthetic_graph(CONFIG, progress=False))


def test_dead_staging_folders_are_removed(tmp_path):
    source = DatasetSource(kind="synthetic", identity={"config": "x"}, version="1")
    entry = entry_dir(tmp_path, source)
    dead = tmp_path / f".{entry.name}.999999999.abc.tmp"
    dead.mkdir(parents=True)
    load_cached(source, lambda: synthetic_graph(CONFIG, progress=False), cache_dir=tmp_path)
    assert not dead.exists() and (entry / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.name]


def test_entry_is_readable_by_others(cached_synthetic):
    cache_dir, _ = cached_synthetic
    entry = only_entry(cache_dir)
    umask = os.umask(0)
    os.umask(umask)
    assert entry.stat().st_mode & 0o777 == 0o777 & ~umask


def test_verify_must_be_known(tmp_path):
    with pytest.raises(ValueError, match=r"verify must be one of \('auto', 'sample', 'full'\), "
                                         r"got 'all'"):
        load_dataset(SPEC, cache_dir=tmp_path, verify="all")
    with pytest.raises(ValueError, match="verify must be one of"):  # before any download
        load_dataset("ogbn-products", root=tmp_path / "absent", cache_dir=tmp_path,
                     verify="all")


def test_default_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GNN_TT_CACHE", str(tmp_path / "env"))
    assert cache.default_cache_dir() == tmp_path / "env"
    load_dataset(SPEC)
    assert only_entry(tmp_path / "env").name.startswith("synthetic-")
    monkeypatch.delenv("GNN_TT_CACHE")
    assert cache.default_cache_dir() == Path("cache/datasets")


def test_bench_data_small(tmp_path):
    from gnn_tt.bench import data as bench_data

    out = tmp_path / "bench.json"
    assert bench_data.main(["--datasets", SPEC, "--reps", "1", "--work-dir", str(tmp_path),
                            "--output", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["dataset"] == SPEC and row["nodes"] == 600
    assert row["disk_B_per_edge"] > 4  # int32 col + the rest
    assert row["second_s"] > 0 and row["first_s"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # cache folders removed
