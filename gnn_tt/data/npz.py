r"""User graphs in a ``.npz`` file (the ``npz:PATH`` dataset form).

Keys:

- ``edge_index`` (required): integer ``[2, E]`` node ids; treated as undirected.
- ``y`` (required): integer ``[N]`` class ids, ``-1`` for unlabelled nodes.
- ``num_nodes`` (optional): scalar; defaults to ``len(y)`` and must equal it.
- ``train_idx``, ``valid_idx``, ``test_idx`` (optional, all three or none): integer ids.
  Without them, a seeded stratified split: each class's labelled nodes are shuffled and cut
  60% / 20% / 20% (train / valid / test, each at least one node when the class has three).
- ``x`` (optional): float ``[N, F]`` node features.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from gnn_tt.data.cache import CSR_BUILD_BYTES_PER_EDGE
from gnn_tt.data.dataset import GraphDataset
from gnn_tt.data.graph import CSRGraph

# Bump when load_npz returns something else for the same file: cached entries are rebuilt.
LOADER_VERSION = 1
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train, valid, test of every class without given splits
_SPLITS = ("train_idx", "valid_idx", "test_idx")


def stratified_split(y: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor,
                                                              torch.Tensor]:
    r"""Split the labelled nodes (``y >= 0``) of every class 60% / 20% / 20%.

    Args:
        y (torch.Tensor): int64 labels, ``-1`` = unlabelled (left out of every split).
        seed (int): seed of the per-class shuffle (default: ``0``).

    Returns:
        ``(train_idx, valid_idx, test_idx)``, int64 and sorted.

    Shapes:
        - **y:** :math:`(N,)`
    """
    gen = torch.Generator().manual_seed(seed)
    labelled = torch.nonzero(y >= 0).view(-1)
    # Shuffle, then a stable sort by class: each class's nodes in a seeded random order.
    labelled = labelled[torch.randperm(labelled.numel(), generator=gen)]
    labelled = labelled[torch.argsort(y[labelled], stable=True)]
    counts = torch.bincount(y[labelled])  # [C]
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(labelled.numel()) - start[y[labelled]]  # position inside its class
    # Cut points per class; rounding up the valid/test shares keeps them non-empty.
    n_test = torch.ceil(counts * SPLIT_FRACTIONS[2]).long()
    n_valid = torch.ceil(counts * SPLIT_FRACTIONS[1]).long()
    n_train = (counts - n_valid - n_test).clamp(min=0)
    n_valid = torch.minimum(n_valid, counts - n_train)
    cls = y[labelled]
    train = labelled[rank < n_train[cls]]
    valid = labelled[(rank >= n_train[cls]) & (rank < (n_train + n_valid)[cls])]
    test = labelled[rank >= (n_train + n_valid)[cls]]
    return train.sort().values, valid.sort().values, test.sort().values


def open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """``np.load(path, allow_pickle=False)`` of an ``.npz`` archive; any failure is a
    ``ValueError`` naming the file."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"npz file {path}: cannot read it ({e})") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"npz file {path}: not an .npz archive (a single array)")
    return data


def npz_array(data: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """``data[key]``; an object array (pickled Python objects, never loaded) is refused with
    an error naming the file and the key."""
    try:
        return data[key]
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        if "allow_pickle" not in str(e):
            raise ValueError(f"npz file {path}: cannot read '{key}' ({e})") from e
        raise ValueError(f"npz file {path}: '{key}' is an object array (pickled Python "
                         f"objects, which are never loaded); store it as a numeric array"
                         ) from None


def _int_array(data: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    arr = npz_array(data, key, path)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"npz file {path}: '{key}' must hold integers, got dtype {arr.dtype}")
    return arr


def npz_headers(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of an ``.npz`` archive, read from the ``.npy`` headers
    alone (nothing loaded); ``{}`` when the file is not a readable archive."""
    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                out[member[:-len(".npy")]] = (tuple(shape), dtype)
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}
    return out


def build_bytes(path: str | Path) -> int:
    """Predicted peak memory of :func:`load_npz` on ``path``, from its array headers."""
    headers = npz_headers(path)
    edges = headers.get("edge_index", ((2, 0), None))[0]
    nodes = headers.get("y", ((0,), None))[0]
    x_shape, x_dtype = headers.get("x", ((0, 0), np.dtype(np.float32)))
    x_bytes = int(np.prod(x_shape)) * (x_dtype.itemsize + 4)  # as stored + the float32 copy
    num_edges = edges[1] if len(edges) == 2 else 0
    num_nodes = nodes[0] if nodes else 0
    # The edge list as stored (or its int64 copy), the CSR build, labels and splits.
    return num_edges * (16 + CSR_BUILD_BYTES_PER_EDGE) + x_bytes + 64 * num_nodes


def load_npz(path: str | Path, seed: int = 0) -> GraphDataset:
    r"""Load a user graph from a ``.npz`` file (layout in the module docstring).

    Args:
        path (str or Path): the file.
        seed (int): seed of the stratified split when the file has none (default: ``0``).

    Raises:
        ValueError: the file is unreadable, lacks a key, or holds inconsistent arrays; the
            message names the file and the problem.
    """
    path = Path(path)
    with open_npz(path) as data:
        missing = [k for k in ("edge_index", "y") if k not in data.files]
        if missing:
            raise ValueError(f"npz file {path}: missing key(s) {missing}; found {data.files}")
        edge_index = _int_array(data, "edge_index", path)
        y = _int_array(data, "y", path)
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"npz file {path}: 'edge_index' must have shape [2, E], got "
                             f"{list(edge_index.shape)}")
        if y.ndim != 1:
            raise ValueError(f"npz file {path}: 'y' must have shape [N], got {list(y.shape)}")
        num_nodes = len(y)
        if "num_nodes" in data.files:
            given = int(_int_array(data, "num_nodes", path))
            if given != num_nodes:
                raise ValueError(f"npz file {path}: 'y' has {num_nodes} labels but "
                                 f"num_nodes = {given}")
        if edge_index.size:
            lo, hi = int(edge_index.min()), int(edge_index.max())
            if lo < 0:
                raise ValueError(f"npz file {path}: 'edge_index' holds a negative node id "
                                 f"({lo})")
            if hi >= num_nodes:
                raise ValueError(f"npz file {path}: 'edge_index' holds node id {hi}, outside "
                                 f"[0, num_nodes={num_nodes})")
        if y.size and int(y.min()) < -1:
            raise ValueError(f"npz file {path}: 'y' holds {int(y.min())}; labels are class "
                             f"ids >= 0 or -1 for unlabelled")
        y_t = torch.from_numpy(y.astype(np.int64))
        num_classes = int(y_t.max()) + 1 if y_t.numel() else 0
        if num_classes < 1:
            raise ValueError(f"npz file {path}: 'y' has no labelled node")

        given_splits = [k for k in _SPLITS if k in data.files]
        if given_splits and len(given_splits) != 3:
            raise ValueError(f"npz file {path}: give all of {list(_SPLITS)} or none; found "
                             f"only {given_splits}")
        if given_splits:
            splits = []
            for key in _SPLITS:
                idx = _int_array(data, key, path).reshape(-1)
                if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num_nodes):
                    raise ValueError(f"npz file {path}: '{key}' holds ids outside "
                                     f"[0, num_nodes={num_nodes})")
                if idx.size and int(y[idx].min()) < 0:
                    raise ValueError(f"npz file {path}: '{key}' holds unlabelled nodes "
                                     f"(y = -1)")
                splits.append(torch.from_numpy(idx.astype(np.int64)))
        else:
            splits = list(stratified_split(y_t, seed))

        x = None
        if "x" in data.files:
            x_np = npz_array(data, "x", path)
            if x_np.ndim != 2 or x_np.shape[0] != num_nodes:
                raise ValueError(f"npz file {path}: 'x' must have shape [num_nodes={num_nodes}"
                                 f", F], got {list(x_np.shape)}")
            x = torch.from_numpy(x_np.astype(np.float32, copy=False))
        if edge_index.dtype not in (np.int32, np.int64):  # torch lacks most unsigned types
            edge_index = edge_index.astype(np.int64)
        graph = CSRGraph.from_edge_index(torch.from_numpy(edge_index), num_nodes)
    return GraphDataset(name=f"npz:{path}", graph=graph, y=y_t, train_idx=splits[0],
                        valid_idx=splits[1], test_idx=splits[2], num_classes=num_classes, x=x)
