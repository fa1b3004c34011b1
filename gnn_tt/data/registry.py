"""``load_dataset(name)``: the one entry point from a dataset name to a :class:`GraphDataset`,
through the on-disk dataset cache (:mod:`gnn_tt.data.cache`)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import torch

from gnn_tt.data import npz
from gnn_tt.data.cache import DatasetSource, check_verify, load_cached
from gnn_tt.data.dataset import GraphDataset
from gnn_tt.data.synthetic import SyntheticConfig, synthetic_graph

OGB_DATASETS = ("ogbn-products", "ogbn-arxiv", "ogbn-papers100M")
# Every accepted form, for CLI help and error messages.
DATASETS = OGB_DATASETS + ("synthetic-products", "synthetic:key=value,...", "npz:PATH")
# Bump when synthetic_graph returns another graph for the same config: cached ones are
# rebuilt. Its output also depends on torch's random generators, hence torch's version in
# the fingerprint.
SYNTHETIC_VERSION = 1
# Peak memory of synthetic_graph per undirected edge (the int64 keys drawn, their sort and
# the CSR): an upper estimate for the memory check before generating.
_SYNTHETIC_BYTES_PER_EDGE = 64


def dataset_names() -> list[str]:
    """The accepted dataset name forms (``synthetic:`` and ``npz:`` take a suffix)."""
    return list(DATASETS)


def default_root() -> Path:
    """Where OGB datasets live: ``$GNN_TT_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("GNN_TT_DATA", "data"))


def _synthetic(config: SyntheticConfig) -> tuple[DatasetSource, Callable[[], GraphDataset],
                                                  Callable[[], int]]:
    torch_version = torch.__version__.split("+")[0]
    source = DatasetSource(kind="synthetic", identity={"config": dataclasses.asdict(config)},
                           version=f"synthetic-{SYNTHETIC_VERSION}/torch-{torch_version}")
    edges = round(config.nodes * config.degree / 2)
    return (source, lambda: synthetic_graph(config),
            lambda: edges * _SYNTHETIC_BYTES_PER_EDGE + 64 * config.nodes)


def _npz(path: str) -> tuple[DatasetSource, Callable[[], GraphDataset], Callable[[], int]]:
    resolved = Path(path).resolve()
    # The split seed is load_npz's default: part of what the entry holds.
    source = DatasetSource(kind="npz", identity={"path": str(resolved), "seed": 0},
                           version=f"npz-{npz.LOADER_VERSION}", files=(resolved,),
                           name=f"npz:{path}")
    return source, lambda: npz.load_npz(path), lambda: npz.build_bytes(resolved)


def _ogb(name: str, root: Path) -> tuple[DatasetSource, Callable[[], GraphDataset],
                                         Callable[[], int]]:
    from gnn_tt.data import ogb  # pandas is imported only when raw files are read

    files = ogb.dataset_files(name, root)  # downloads or says what is missing
    folder = ogb.dataset_dir(name, root).resolve()
    source = DatasetSource(kind="ogbn", identity={"name": name, "folder": str(folder)},
                           version=f"ogb-{ogb.LOADER_VERSION}", files=files, name=name)
    return (source, lambda: ogb.read_raw(name, folder),
            lambda: ogb.build_bytes(name, folder))


def load_dataset(name: str, root: str | Path | None = None,
                 cache_dir: str | Path | None = None, verify: str = "auto") -> GraphDataset:
    r"""Load a node-classification dataset by name, from the dataset cache when it holds a
    valid copy (the CSR memory-mapped, not rebuilt), else built and cached.

    Args:
        name (str): one of

            - ``ogbn-products``, ``ogbn-arxiv``, ``ogbn-papers100M``: read from ogb's raw
              files in ``root/ogbn_<name>/`` (downloaded there on first use when online;
              :mod:`gnn_tt.data.ogb`);
            - ``synthetic-products``: the products-scale synthetic graph
              (:func:`gnn_tt.data.synthetic.synthetic_graph`);
            - ``synthetic:key=value,...``: the synthetic graph with
              :class:`~gnn_tt.data.synthetic.SyntheticConfig` fields overridden, e.g.
              ``synthetic:nodes=200000,degree=25,classes=47``;
            - ``npz:PATH``: a user graph in a ``.npz`` file (:func:`gnn_tt.data.npz.load_npz`).
        root (str or Path, optional): directory of the OGB datasets (default:
            ``$GNN_TT_DATA`` or ``./data``). Ignored by the other forms.
        cache_dir (str or Path, optional): the dataset cache (default: ``$GNN_TT_CACHE`` or
            ``./cache/datasets``).
        verify (str): how much of the cached arrays is checksummed: ``"auto"`` (all of it up
            to 2 GiB, else samples), ``"sample"`` or ``"full"`` (default: ``"auto"``).
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    check_verify(verify)  # before an OGB download
    if name in OGB_DATASETS:
        recipe = _ogb(name, default_root() if root is None else Path(root))
    elif name == "synthetic-products":
        recipe = _synthetic(SyntheticConfig())
    elif name.startswith("synthetic:"):
        recipe = _synthetic(SyntheticConfig.from_string(name[len("synthetic:"):]))
    elif name.startswith("npz:"):
        recipe = _npz(name[len("npz:"):])
    else:
        raise ValueError(f"unknown dataset {name!r}; valid forms: {', '.join(DATASETS)}")
    source, build, build_bytes = recipe
    return load_cached(source, build, cache_dir=cache_dir, verify=verify,
                       build_bytes=build_bytes)
