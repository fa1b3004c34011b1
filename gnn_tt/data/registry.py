"""``load_dataset(name)``: the one entry point from a dataset name to a :class:`GraphDataset`."""
from __future__ import annotations

import os
from pathlib import Path

from gnn_tt.data.dataset import GraphDataset
from gnn_tt.data.npz import load_npz
from gnn_tt.data.synthetic import SyntheticConfig, synthetic_graph

OGB_DATASETS = ("ogbn-products", "ogbn-arxiv", "ogbn-papers100M")
# Every accepted form, for CLI help and error messages.
DATASETS = OGB_DATASETS + ("synthetic-products", "synthetic:key=value,...", "npz:PATH")


def dataset_names() -> list[str]:
    """The accepted dataset name forms (``synthetic:`` and ``npz:`` take a suffix)."""
    return list(DATASETS)


def default_root() -> Path:
    """Where OGB datasets live: ``$GNN_TT_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("GNN_TT_DATA", "data"))


def load_dataset(name: str, root: str | Path | None = None) -> GraphDataset:
    r"""Load a node-classification dataset by name.

    Args:
        name (str): one of

            - ``ogbn-products``, ``ogbn-arxiv``, ``ogbn-papers100M``: through ogb's loader,
              from ``root/ogbn_<name>/`` (downloaded there on first use when online);
            - ``synthetic-products``: the products-scale synthetic graph
              (:func:`gnn_tt.data.synthetic.synthetic_graph`);
            - ``synthetic:key=value,...``: the synthetic graph with
              :class:`~gnn_tt.data.synthetic.SyntheticConfig` fields overridden, e.g.
              ``synthetic:nodes=200000,degree=25,classes=47``;
            - ``npz:PATH``: a user graph in a ``.npz`` file (:func:`gnn_tt.data.npz.load_npz`).
        root (str or Path, optional): directory of the OGB datasets (default:
            ``$GNN_TT_DATA`` or ``./data``). Ignored by the other forms.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    if name in OGB_DATASETS:
        from gnn_tt.data.ogb import load_ogb  # imports ogb and pandas (slow): only when used
        return load_ogb(name, default_root() if root is None else Path(root))
    if name == "synthetic-products":
        return synthetic_graph()
    if name.startswith("synthetic:"):
        return synthetic_graph(SyntheticConfig.from_string(name[len("synthetic:"):]))
    if name.startswith("npz:"):
        return load_npz(name[len("npz:"):])
    raise ValueError(f"unknown dataset {name!r}; valid forms: {', '.join(DATASETS)}")
