r"""OGB node-property datasets through ogb's own loader (:class:`NodePropPredDataset`), with
the traps of ogb 1.3.6 handled:

- Reloading its ``processed/data_processed`` cache fails under torch >= 2.6: ``torch.load``
  defaults to ``weights_only=True``, whose unpickler rejects the pickle protocol 4 file of
  numpy arrays ogb wrote. Inside :func:`load_ogb`, ogb's module sees a ``torch`` whose
  ``load`` passes ``weights_only=False``; ogb's own cache (and ``split_dict.pt``) in the
  data directory is trusted, as ogb trusted it before torch 2.6.
- ogb calls ``input()`` when the dataset folder lacks ``RELEASE_v<version>.txt`` (and before
  downloading more than 1 GB), and ``exit()``\ s on "no". :func:`load_ogb` never lets ogb
  decide: complete local files get the release marker; a missing folder is downloaded here
  (with a timeout on the first request) or fails with an error that says which files to put
  where; an incomplete folder fails with the list of missing files.
- ogb's first load writes ``processed/`` but does not create it: created here.
"""
from __future__ import annotations

import contextlib
import functools
import os.path as osp
import shutil
import types
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from gnn_tt.data.dataset import GraphDataset
from gnn_tt.data.graph import CSRGraph
from gnn_tt.common.io import atomic_write_text

# Seconds to wait for the OGB server before declaring the machine offline.
_CONNECT_TIMEOUT = 15.0


def _meta(name: str) -> dict[str, str]:
    """The dataset's column of ogb's ``master.csv`` (what ogb's loader reads)."""
    import pandas as pd
    from ogb import nodeproppred

    master = pd.read_csv(osp.join(osp.dirname(nodeproppred.__file__), "master.csv"),
                         index_col=0, keep_default_na=False)
    if name not in master:
        raise ValueError(f"unknown OGB node dataset {name!r}; ogb knows {list(master.keys())}")
    return {k: str(v) for k, v in master[name].items()}


def required_files(name: str) -> list[str]:
    """Files (relative to ``root/<ogbn_name>/``) ogb's loader needs for ``name``."""
    meta = _meta(name)
    split = f"split/{meta['split']}"
    files = [f"{split}/{s}.csv.gz" for s in ("train", "valid", "test")]
    if meta["binary"] == "True":  # papers100M: numpy archives
        return ["raw/data.npz", "raw/node-label.npz"] + files
    extra = [] if meta["additional node files"] == "None" else \
        [f"raw/{f}.csv.gz" for f in meta["additional node files"].split(",")]
    return ["raw/edge.csv.gz", "raw/num-node-list.csv.gz", "raw/num-edge-list.csv.gz",
            "raw/node-label.csv.gz"] + extra + files


def dataset_dir(name: str, root: str | Path) -> Path:
    """``root/ogbn_<name>``: the folder ogb uses (hyphens become underscores)."""
    return Path(root) / name.replace("-", "_")


def _missing(name: str, folder: Path) -> list[str]:
    processed = (folder / "processed" / "data_processed").exists()
    return [f for f in required_files(name)
            if not (folder / f).exists() and not (processed and f.startswith("raw/"))]


def _where_to_put(name: str, folder: Path, meta: dict[str, str]) -> str:
    return (f"Download {meta['url']}, unzip it and move its folder '{meta['download_name']}' "
            f"to {folder}, so that these exist: "
            + ", ".join(str(folder / f) for f in required_files(name)))


def _download(name: str, root: Path, meta: dict[str, str]) -> None:
    """Fetch and unpack the dataset zip into ``root`` as ogb would, without its prompts."""
    from ogb.utils.url import download_url, extract_zip

    folder = dataset_dir(name, root)
    try:  # ogb's own download has no timeout: probe the server first
        urllib.request.urlopen(urllib.request.Request(meta["url"], method="HEAD"),
                               timeout=_CONNECT_TIMEOUT).close()
    except (urllib.error.URLError, OSError) as e:
        raise FileNotFoundError(f"{name} is not in {folder} and cannot be downloaded "
                                f"({e}). {_where_to_put(name, folder, meta)}") from e
    root.mkdir(parents=True, exist_ok=True)
    path = download_url(meta["url"], str(root))
    extract_zip(path, str(root))
    Path(path).unlink()
    shutil.move(str(root / meta["download_name"]), str(folder))


@contextlib.contextmanager
def _trusting_ogb_torch_load() -> Iterator[None]:
    """Let ogb's module (only it) reload its own pickled cache under torch >= 2.6."""
    import ogb.nodeproppred.dataset as ogb_dataset

    shim = types.SimpleNamespace(load=functools.partial(torch.load, weights_only=False),
                                 save=torch.save)
    saved = ogb_dataset.torch
    ogb_dataset.torch = shim
    try:
        yield
    finally:
        ogb_dataset.torch = saved


def load_ogb(name: str, root: str | Path, download: bool = True) -> GraphDataset:
    r"""Load ``ogbn-products``, ``ogbn-arxiv`` or ``ogbn-papers100M`` with ogb's loader.

    Never prompts: see the module docstring.

    Args:
        name (str): the OGB name, e.g. ``"ogbn-products"``.
        root (str or Path): parent of the ``ogbn_<name>`` folder.
        download (bool): fetch the dataset when its folder is absent (default: ``True``).

    Returns:
        GraphDataset: symmetrized graph, ``y`` with ``-1`` for unlabelled nodes (the NaN
        labels of papers100M), ogb's split, ``x`` = ogb's ``node_feat``, ``ogb_name = name``.

    Raises:
        FileNotFoundError: files missing and not downloadable; the message lists them.
    """
    from ogb.nodeproppred import NodePropPredDataset

    meta = _meta(name)
    root = Path(root)
    folder = dataset_dir(name, root)
    if not folder.exists():
        if not download:
            raise FileNotFoundError(f"{name} is not in {folder} (download disabled). "
                                    f"{_where_to_put(name, folder, meta)}")
        _download(name, root, meta)
    missing = _missing(name, folder)
    if missing:
        raise FileNotFoundError(f"{name}: {folder} lacks {missing}. "
                                f"{_where_to_put(name, folder, meta)}")
    release = folder / f"RELEASE_v{meta['version']}.txt"
    if not release.exists():  # hand-placed files: mark them current so ogb does not ask
        atomic_write_text(release, f"{name} files placed by hand; marked by gnn_tt\n")
    (folder / "processed").mkdir(exist_ok=True)

    with _trusting_ogb_torch_load():
        ds = NodePropPredDataset(name=name, root=str(root))
        split = ds.get_idx_split()
    graph_np, labels = ds[0]
    num_nodes = int(graph_np["num_nodes"])
    graph = CSRGraph.from_edge_index(torch.from_numpy(graph_np["edge_index"]), num_nodes)
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind == "f":  # papers100M: NaN = unlabelled
        labels = np.where(np.isnan(labels), -1, labels)
    y = torch.from_numpy(labels.astype(np.int64))
    x = graph_np.get("node_feat")
    return GraphDataset(
        name=name, graph=graph, y=y,
        train_idx=torch.from_numpy(np.array(split["train"], dtype=np.int64)),
        valid_idx=torch.from_numpy(np.array(split["valid"], dtype=np.int64)),
        test_idx=torch.from_numpy(np.array(split["test"], dtype=np.int64)),
        num_classes=int(meta["num classes"]),
        x=None if x is None else torch.from_numpy(np.ascontiguousarray(x)),
        ogb_name=name)
