r"""OGB node-property datasets read from the raw files ogb downloads, without ogb's loader.

The folder ``root/ogbn_<name>/`` holds what ogb's zip unpacks to:

- ``ogbn-products``, ``ogbn-arxiv``: ``raw/edge.csv.gz`` (one ``src,dst`` row per edge),
  ``raw/num-node-list.csv.gz`` and ``raw/num-edge-list.csv.gz`` (one row: the counts),
  ``raw/node-label.csv.gz`` (one row per node), ``raw/node-feat.csv.gz`` (one row of floats
  per node, optional), arxiv's ``raw/node_year.csv.gz``;
- ``ogbn-papers100M``: ``raw/data.npz`` (``edge_index`` [2, E], ``num_nodes_list``,
  ``node_feat`` float16 [N, 128], ...) and ``raw/node-label.npz`` (``node_label`` [N, 1],
  NaN for unlabelled nodes);
- all: ogb's split, ``split/<type>/{train,valid,test}.csv.gz`` (one node id per row).

No pickle is ever loaded from that folder: ogb's own ``processed/data_processed`` cache and
``split_dict.pt`` (both pickles, which run code when loaded) are ignored; ``.npz`` members are
read with ``allow_pickle=False``. The big CSV files are parsed in chunks into preallocated
arrays. Evaluation still uses ``ogb.nodeproppred.Evaluator`` under the dataset's OGB name.

ogb's loader called ``input()`` on a folder without ``RELEASE_v<version>.txt`` and before
large downloads; nothing here prompts: a missing folder is downloaded (with a timeout on the
first request) or fails with an error that says which files to put where; an incomplete
folder fails with the list of missing files.
"""
from __future__ import annotations

import csv
import gzip
import importlib.util
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from gnn_tt.data.cache import CSR_BUILD_BYTES_PER_EDGE
from gnn_tt.data.dataset import GraphDataset
from gnn_tt.data.graph import CSRGraph
from gnn_tt.data.npz import npz_array, npz_headers, open_npz

# Bump when read_raw returns something else for the same files: cached entries are rebuilt.
LOADER_VERSION = 1
# Seconds to wait for the OGB server before declaring the machine offline.
_CONNECT_TIMEOUT = 15.0
# Values parsed per CSV chunk: bounds pandas' temporaries (about 8 bytes each) to ~64 MB.
_CSV_CHUNK_VALUES = 1 << 23
_FEATURES = "raw/node-feat.csv.gz"  # optional in ogb's csv layout


def _meta(name: str) -> dict[str, str]:
    """The dataset's column of ogb's ``nodeproppred/master.csv`` (read without importing ogb,
    which imports torch_geometric)."""
    spec = importlib.util.find_spec("ogb")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name}: the OGB datasets need the 'ogb' package "
                                  f"(pip install ogb)")
    master = Path(spec.submodule_search_locations[0]) / "nodeproppred" / "master.csv"
    with open(master, newline="") as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    if name not in names:
        raise ValueError(f"unknown OGB node dataset {name!r}; ogb knows {names}")
    column = rows[0].index(name)
    return {row[0]: row[column] for row in rows[1:]}


def required_files(name: str) -> list[str]:
    """Files (relative to ``root/<ogbn_name>/``) of ogb's layout for ``name``."""
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
    return [f for f in required_files(name) if not (folder / f).is_file()]


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


def dataset_files(name: str, root: str | Path, download: bool = True) -> tuple[Path, ...]:
    r"""The files :func:`read_raw` reads for ``name`` (absolute), downloading the dataset
    when its folder is absent.

    Raises:
        FileNotFoundError: files missing and not downloadable; the message lists them and
            says where to put them.
    """
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
    files = required_files(name)
    if meta["binary"] != "True" and (folder / _FEATURES).is_file():
        files.append(_FEATURES)
    return tuple((folder / f).resolve() for f in files)


def _columns(path: Path) -> int:
    """Number of comma-separated columns on the first line of a ``.csv.gz``."""
    try:
        with gzip.open(path, "rt") as f:
            return f.readline().count(",") + 1
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read it ({e})") from e


def _read_csv(path: Path, dtype: type, out: np.ndarray | None = None) -> np.ndarray:
    """A headerless ``.csv.gz`` as a ``[rows, columns]`` array, parsed in chunks: into
    ``out`` when given (the file must then have exactly its shape), else concatenated."""
    import pandas as pd  # slow to import: only when raw files are read

    columns = _columns(path)
    if out is not None and out.shape[1] != columns:
        raise ValueError(f"{path}: {columns} columns, expected {out.shape[1]}")
    parts, filled = [], 0
    try:
        with pd.read_csv(path, compression="gzip", header=None, dtype=dtype,
                         chunksize=max(1, _CSV_CHUNK_VALUES // columns)) as reader:
            for chunk in reader:
                block = chunk.to_numpy(dtype=dtype)  # [chunk rows, columns]
                if out is None:
                    parts.append(block)
                    continue
                if filled + len(block) > len(out):
                    raise ValueError(f"more than the {len(out)} rows expected")
                out[filled:filled + len(block)] = block
                filled += len(block)
    except (ValueError, OverflowError, OSError, EOFError, pd.errors.ParserError) as e:
        raise ValueError(f"{path}: cannot read it ({e})") from e
    if out is None:
        return np.concatenate(parts) if parts else np.empty((0, columns), dtype=dtype)
    if filled != len(out):
        raise ValueError(f"{path}: {filled} rows, expected {len(out)}")
    return out


def _count(folder: Path, file: str) -> int:
    """The one count in ogb's ``num-node-list`` / ``num-edge-list`` (node datasets hold a
    single graph)."""
    counts = _read_csv(folder / file, np.int64).reshape(-1)
    if counts.size != 1 or counts[0] < 0:
        raise ValueError(f"{folder / file}: expected one count (a single graph), got "
                         f"{counts.tolist()[:5]}")
    return int(counts[0])


def _labels(values: np.ndarray, num_nodes: int, path: Path) -> torch.Tensor:
    """int64 ``[N]`` labels, ``-1`` where the file has NaN (unlabelled)."""
    values = values.reshape(-1)
    if values.size != num_nodes:
        raise ValueError(f"{path}: {values.size} labels for {num_nodes} nodes")
    if values.dtype.kind == "f":
        values = np.where(np.isnan(values), -1, values)
    return torch.from_numpy(values.astype(np.int64))


def _graph(edge_index: np.ndarray, num_nodes: int, path: Path) -> CSRGraph:
    try:
        return CSRGraph.from_edge_index(torch.from_numpy(edge_index), num_nodes)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from e


def build_bytes(name: str, folder: str | Path) -> int:
    """Predicted peak memory of :func:`read_raw`, from the counts and headers alone."""
    folder = Path(folder)
    # An upper bound: read_raw frees the edge list before it reads the features.
    if _meta(name)["binary"] == "True":
        headers = npz_headers(folder / "raw" / "data.npz")
        num_edges = headers.get("edge_index", ((2, 0), None))[0][-1]
        x_shape, x_dtype = headers.get("node_feat", ((0, 0), np.dtype(np.float16)))
        return (num_edges * (16 + CSR_BUILD_BYTES_PER_EDGE)
                + int(np.prod(x_shape)) * x_dtype.itemsize)
    num_nodes = _count(folder, "raw/num-node-list.csv.gz")
    num_edges = _count(folder, "raw/num-edge-list.csv.gz")
    features = _columns(folder / _FEATURES) if (folder / _FEATURES).is_file() else 0
    id_bytes = np.dtype(_id_dtype(num_nodes)).itemsize
    return (num_edges * (2 * id_bytes + CSR_BUILD_BYTES_PER_EDGE)
            + num_nodes * (4 * features + 64))


def _id_dtype(num_nodes: int) -> type:
    """The narrowest dtype of node ids below ``num_nodes`` among int32 and int64."""
    return np.int32 if num_nodes <= np.iinfo(np.int32).max else np.int64


def read_raw(name: str, folder: str | Path) -> GraphDataset:
    r"""Read ``ogbn-products``, ``ogbn-arxiv`` or ``ogbn-papers100M`` from ogb's raw files in
    ``folder`` (layout in the module docstring; :func:`dataset_files` checks them first).

    Returns:
        GraphDataset: symmetrized graph, ``y`` with ``-1`` for unlabelled nodes, ogb's split,
        ``x`` = the node features (float32 from CSV, papers100M's float16 as stored),
        ``ogb_name = name``.

    Raises:
        ValueError: a file is unreadable or inconsistent; the message names it.
    """
    meta = _meta(name)
    folder = Path(folder)
    raw = folder / "raw"
    # The edge list is freed once the CSR is built, before the features are read: the two
    # largest arrays are never held together.
    if meta["binary"] == "True":
        with open_npz(raw / "data.npz") as data:
            num_nodes = int(np.asarray(npz_array(data, "num_nodes_list", raw / "data.npz"))
                            .reshape(-1)[0])
            graph = _graph(npz_array(data, "edge_index", raw / "data.npz"), num_nodes,
                           raw / "data.npz")
            x = npz_array(data, "node_feat", raw / "data.npz") if "node_feat" in data.files \
                else None
        with open_npz(raw / "node-label.npz") as data:
            y = _labels(npz_array(data, "node_label", raw / "node-label.npz"), num_nodes,
                        raw / "node-label.npz")
    else:
        num_nodes = _count(folder, "raw/num-node-list.csv.gz")
        num_edges = _count(folder, "raw/num-edge-list.csv.gz")
        # [2, E], filled through its transpose: the file's rows are (src, dst) pairs.
        edge_index = np.empty((2, num_edges), dtype=_id_dtype(num_nodes))
        _read_csv(raw / "edge.csv.gz", edge_index.dtype.type, out=edge_index.T)
        graph = _graph(edge_index, num_nodes, raw / "edge.csv.gz")
        del edge_index
        labels = _read_csv(raw / "node-label.csv.gz", np.float64,
                           out=np.empty((num_nodes, 1)))  # float: NaN marks no label
        y = _labels(labels, num_nodes, raw / "node-label.csv.gz")
        x = None
        if (folder / _FEATURES).is_file():
            x = _read_csv(folder / _FEATURES, np.float32, out=np.empty(
                (num_nodes, _columns(folder / _FEATURES)), dtype=np.float32))
    if x is not None and x.dtype.kind != "f":
        x = x.astype(np.float32)
    split = folder / "split" / meta["split"]
    idx = [torch.from_numpy(_read_csv(split / f"{s}.csv.gz", np.int64).reshape(-1))
           for s in ("train", "valid", "test")]
    return GraphDataset(name=name, graph=graph, y=y, train_idx=idx[0], valid_idx=idx[1],
                        test_idx=idx[2], num_classes=int(meta["num classes"]),
                        x=None if x is None else torch.from_numpy(np.ascontiguousarray(x)),
                        ogb_name=name)


def load_ogb(name: str, root: str | Path, download: bool = True) -> GraphDataset:
    r"""Load ``ogbn-products``, ``ogbn-arxiv`` or ``ogbn-papers100M`` from its raw files,
    uncached (:func:`gnn_tt.data.load_dataset` caches it).

    Args:
        name (str): the OGB name, e.g. ``"ogbn-products"``.
        root (str or Path): parent of the ``ogbn_<name>`` folder.
        download (bool): fetch the dataset when its folder is absent (default: ``True``).

    Raises:
        FileNotFoundError: files missing and not downloadable; the message lists them.
        ValueError: a file is unreadable or inconsistent; the message names it.
    """
    dataset_files(name, root, download)
    return read_raw(name, dataset_dir(name, root))
