r"""On-disk dataset cache: every loaded dataset kept as plain ``.npy`` arrays, mapped on reload.

Layout of one entry (``<cache_dir>/<slug>-<key>/``)::

    manifest.json    format, source identity and fingerprint, name, num_nodes, num_classes,
                     and per array: dtype, shape, file bytes, crc32 and sampled crc32
    rowptr.npy       int64 [N + 1]        col.npy        int32 [E] (int64 when N >= 2^31)
    y.npy            int64 [N]            x.npy          float [N, F] (when the dataset has x)
    train_idx.npy, valid_idx.npy, test_idx.npy   int64

``key`` hashes the source's *identity* (what it is: the synthetic config, the resolved path of
an ``.npz``, the folder of an OGB dataset); the manifest stores its *fingerprint* (which
version of it: the loader version, and for files their size, mtime and crc32). A fingerprint
that no longer matches makes the entry stale; it is rebuilt in place.

Files are identified by ``(size, mtime_ns)`` on every load (a ``stat``, microseconds); only
when that changed is the file's crc32 computed and compared (a ``touch`` or a copy keeps the
entry). Reading a products-scale source costs a fraction of a second at crc32's speed, and
only then, while hashing it on every load would cost as much as the mapped load itself.

What is checked when:

- every load: the manifest parses and has this format; it was written for this source
  (identity) and the source is unchanged (fingerprint); every array file has its recorded
  byte size (a truncated file fails here) and sampled crc32 (16 blocks of 64 KiB spread over
  the file, header and tail included); ``np.load(allow_pickle=False)`` gives the recorded
  dtype and shape; ``GraphDataset`` validates labels and splits;
- also the crc32 of every byte of every file when ``verify="full"``, and under
  ``verify="auto"`` (the default) when the entry holds at most :data:`AUTO_FULL_BYTES`
  (crc32 runs at GB/s: a fraction of a second at that size on a warm page cache; figures in
  docs/benchmarks.md): products scale is checked in full on every load, papers100M scale
  (tens of GB) by samples unless asked.

A check that fails is reported with a warning naming the entry and the reason, and the entry
is rebuilt. crc32 detects accidental damage, not an adversary: whoever can write the cache
can rewrite the manifest too. What no file can do is run code: arrays are read with
``allow_pickle=False`` only, so an object array (a pickle) is refused, never loaded.

Writes are atomic: the entry is written into a staging directory beside it, every file and
the directory fsynced, then renamed into place; a reader never sees a half-written entry, and
of two processes building the same entry, the last rename wins with an equal result.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import psutil
import torch

from gnn_tt.common.io import atomic_write_json
from gnn_tt.data.dataset import GraphDataset
from gnn_tt.data.graph import CSRGraph

# Bump when the entry layout or the manifest changes: older entries are then rebuilt.
FORMAT_VERSION = 1
VERIFY_MODES = ("auto", "sample", "full")
# Under verify="auto", entries up to this size get the full crc32 on every load.
AUTO_FULL_BYTES = 2 << 30
_SAMPLE_BLOCKS = 16
_SAMPLE_BLOCK = 1 << 16
_READ_CHUNK = 1 << 24
_SPLITS = ("train_idx", "valid_idx", "test_idx")
# Peak memory of CSRGraph.from_edge_index per input edge of an [2, E] list (symmetrized,
# int32 ids), beyond the input and with the output included: an upper estimate for the
# memory check before a build.
CSR_BUILD_BYTES_PER_EDGE = 16


def check_verify(verify: str) -> None:
    """Raise ``ValueError`` naming ``verify`` unless it is one of :data:`VERIFY_MODES`."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")


def default_cache_dir() -> Path:
    """Where datasets are cached: ``$GNN_TT_CACHE`` if set, else ``./cache/datasets``."""
    return Path(os.environ.get("GNN_TT_CACHE", "cache/datasets"))


@dataclass(frozen=True)
class DatasetSource:
    r"""What a cache entry is built from.

    Args:
        kind (str): the loader family, e.g. ``"synthetic"``, ``"npz"``, ``"ogbn"``; also the
            start of the entry's folder name.
        identity (dict): JSON-able, what the source is (the entry's key hashes it with
            ``kind``), e.g. ``{"path": "/data/g.npz"}``.
        version (str): the loader's output version and whatever else its output depends on;
            a change makes the entry stale.
        files (tuple of Path): the files read to build it; a change in their contents makes
            the entry stale (default: none).
        name (str, optional): the dataset's name; ``None`` keeps the name the builder gave
            it, as stored in the manifest (default: ``None``).
    """

    kind: str
    identity: dict[str, Any]
    version: str
    files: tuple[Path, ...] = ()
    name: str | None = None

    def key(self) -> str:
        """16 hex digits of blake2b over the canonical JSON of ``kind`` and ``identity``."""
        text = _canonical({"kind": self.kind, "identity": self.identity})
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class _Unusable(Exception):
    """The entry cannot be used; the message says why."""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def entry_dir(cache_dir: str | Path, source: DatasetSource) -> Path:
    """``cache_dir/<kind>-<readable part>-<key>``, the folder of ``source``'s entry."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", (source.name or "").split("/")[-1]).strip("-")
    if not readable.startswith(source.kind):
        readable = f"{source.kind}-{readable}".strip("-")
    return Path(cache_dir) / f"{readable[:48]}-{source.key()}"


def file_crc32(path: str | Path) -> int:
    """crc32 of a whole file, read in 16 MiB chunks."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(_READ_CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def sample_crc32(path: str | Path) -> int:
    """crc32 over 16 blocks of 64 KiB evenly spread from the first to the last byte (the
    whole file when it is smaller)."""
    size = os.path.getsize(path)
    if size <= _SAMPLE_BLOCKS * _SAMPLE_BLOCK:
        return file_crc32(path)
    crc = 0
    with open(path, "rb") as f:
        for i in range(_SAMPLE_BLOCKS):
            f.seek(i * (size - _SAMPLE_BLOCK) // (_SAMPLE_BLOCKS - 1))
            crc = zlib.crc32(f.read(_SAMPLE_BLOCK), crc)
    return crc


def warn_if_short(stage: str, needed: int) -> bool:
    """Warn (``RuntimeWarning``) before ``stage`` starts when its forecast peak of ``needed``
    bytes exceeds the memory available now.

    Returns:
        bool: whether it warned.
    """
    available = int(psutil.virtual_memory().available)
    if needed <= available:
        return False
    warnings.warn(f"{stage} needs about {_size(needed)} of memory, {_size(available)} "
                  f"are available: it may run out of memory", RuntimeWarning, stacklevel=3)
    return True


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.1f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.1f} MB"


def _file_record(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "crc32": file_crc32(path)}


def _fingerprint(source: DatasetSource) -> dict[str, Any]:
    return {"version": source.version, "files": [_file_record(p) for p in source.files]}


def _check_source(manifest: dict[str, Any], source: DatasetSource, entry: Path) -> None:
    """Raise :class:`_Unusable` when the source changed since the entry was built; refresh
    the recorded ``(size, mtime_ns)`` of files whose contents did not change."""
    recorded = manifest["source"]
    if recorded["version"] != source.version:
        raise _Unusable(f"stale: built by loader version {recorded['version']!r}, now "
                        f"{source.version!r}")
    if [r["path"] for r in recorded["files"]] != [str(p) for p in source.files]:
        raise _Unusable(f"stale: built from files {[r['path'] for r in recorded['files']]}")
    touched = False
    for rec, path in zip(recorded["files"], source.files):
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) == (rec["size"], rec["mtime_ns"]):
            continue
        if st.st_size != rec["size"] or file_crc32(path) != rec["crc32"]:
            raise _Unusable(f"stale: source file {path} changed (size {rec['size']} -> "
                            f"{st.st_size} bytes, or its contents)")
        rec["mtime_ns"] = st.st_mtime_ns
        touched = True
    if touched:  # same bytes, new mtime: record it so the next load skips the crc32
        try:
            atomic_write_json(entry / "manifest.json", manifest)
        except OSError:
            pass  # a read-only cache stays valid; the crc32 is just paid again


def _open_entry(entry: Path, source: DatasetSource, verify: str) -> GraphDataset:
    """The dataset of a verified entry, its arrays memory-mapped (copy-on-write: writes to
    the tensors stay private to the process). Raises :class:`_Unusable` with the reason."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise _Unusable(f"corrupt: manifest.json is unreadable ({err})") from None
    try:
        if manifest.get("format") != FORMAT_VERSION:
            raise _Unusable(f"stale: format {manifest.get('format')!r}, this code reads "
                            f"{FORMAT_VERSION}")
        if (manifest["kind"], manifest["identity"]) != (source.kind,
                                                        json.loads(_canonical(source.identity))):
            raise _Unusable(f"corrupt: written for another source ({manifest['kind']} "
                            f"{manifest['identity']})")
        _check_source(manifest, source, entry)
        arrays = manifest["arrays"]
        missing = [k for k in ("rowptr", "col", "y", *_SPLITS) if k not in arrays]
        if missing:
            raise _Unusable(f"corrupt: the manifest lacks arrays {missing}")
        full = verify == "full" or (verify == "auto" and sum(
            a["bytes"] for a in arrays.values()) <= AUTO_FULL_BYTES)
        tensors = {key: _open_array(entry / f"{key}.npy", meta, full)
                   for key, meta in arrays.items()}
        num_nodes = int(manifest["num_nodes"])
        rowptr, col = tensors["rowptr"], tensors["col"]
        if rowptr.numel() != num_nodes + 1 or int(rowptr[0]) != 0 \
                or int(rowptr[-1]) != col.numel():
            raise _Unusable("corrupt: rowptr does not match num_nodes and col")
        return GraphDataset(
            name=source.name or manifest["name"], graph=CSRGraph(rowptr, col, num_nodes),
            y=tensors["y"], train_idx=tensors["train_idx"], valid_idx=tensors["valid_idx"],
            test_idx=tensors["test_idx"], num_classes=int(manifest["num_classes"]),
            x=tensors.get("x"), ogb_name=manifest["ogb_name"])
    except (KeyError, TypeError) as err:
        raise _Unusable(f"corrupt: the manifest lacks or garbles {err}") from None
    except ValueError as err:  # GraphDataset's validation
        raise _Unusable(f"corrupt: {err}") from None
    except OSError as err:  # e.g. replaced by another process while being read
        raise _Unusable(f"unreadable: {err}") from None


def _open_array(path: Path, meta: dict[str, Any], full: bool) -> torch.Tensor:
    try:
        size = path.stat().st_size
    except OSError:
        raise _Unusable(f"corrupt: {path.name} is missing") from None
    if size != meta["bytes"]:
        raise _Unusable(f"corrupt: {path.name} has {size} bytes, expected {meta['bytes']} "
                        f"(truncated or replaced)")
    if full and file_crc32(path) != meta["crc32"]:
        raise _Unusable(f"corrupt: {path.name} does not match its crc32")
    if not full and sample_crc32(path) != meta["sample_crc32"]:
        raise _Unusable(f"corrupt: {path.name} does not match its sampled crc32")
    try:
        # Never allow_pickle: an object array is refused here, its bytes never unpickled.
        array = np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise _Unusable(f"corrupt: {path.name} is not a plain array ({err})") from None
    if str(array.dtype) != meta["dtype"] or list(array.shape) != meta["shape"]:
        raise _Unusable(f"corrupt: {path.name} holds {array.dtype} {list(array.shape)}, "
                        f"expected {meta['dtype']} {meta['shape']}")
    return torch.from_numpy(array)


def _write_array(path: Path, array: np.ndarray) -> dict[str, Any]:
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {"dtype": str(array.dtype), "shape": list(array.shape),
            "bytes": path.stat().st_size, "crc32": file_crc32(path),
            "sample_crc32": sample_crc32(path)}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_dead_staging(entry: Path) -> None:
    """Delete staging folders of this entry left by processes that no longer run."""
    for stale in entry.parent.glob(f".{entry.name}.*.tmp"):
        pid = stale.name[len(entry.name) + 2:].split(".")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _save_entry(entry: Path, source: DatasetSource, fingerprint: dict[str, Any],
                ds: GraphDataset) -> None:
    """Write ``ds`` as the entry: staged beside it, fsynced, renamed into place."""
    arrays = {"rowptr": ds.graph.rowptr, "col": ds.graph.col, "y": ds.y,
              "train_idx": ds.train_idx, "valid_idx": ds.valid_idx, "test_idx": ds.test_idx}
    if ds.x is not None:
        arrays["x"] = ds.x
    entry.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(entry)
    need = sum(t.numel() * t.element_size() for t in arrays.values())
    free = shutil.disk_usage(entry.parent).free
    if need > free:
        raise OSError(f"it needs {need / 1e9:.2f} GB on disk, {free / 1e9:.2f} GB are free")
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.{os.getpid()}.", suffix=".tmp",
                                    dir=entry.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would hide the entry from others
        records = {key: _write_array(staging / f"{key}.npy", t.detach().cpu().numpy())
                   for key, t in arrays.items()}
        manifest = {"format": FORMAT_VERSION, "kind": source.kind,
                    "identity": json.loads(_canonical(source.identity)), "source": fingerprint,
                    "name": ds.name, "ogb_name": ds.ogb_name, "num_nodes": ds.num_nodes,
                    "num_edges": ds.graph.num_edges, "num_classes": ds.num_classes,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "arrays": records}
        atomic_write_json(staging / "manifest.json", manifest)
        _fsync_dir(staging)
        try:
            os.rename(staging, entry)
        except OSError:  # an entry is there (stale, corrupt, or a concurrent writer's)
            old = entry.with_name(f".{entry.name}.{os.getpid()}.old")
            try:
                os.rename(entry, old)
            except FileNotFoundError:
                pass
            os.rename(staging, entry)
            # Readers that mapped the old files keep them until they unmap them.
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(entry.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_cached(source: DatasetSource, build: Callable[[], GraphDataset],
                cache_dir: str | Path | None = None, verify: str = "auto",
                build_bytes: Callable[[], int] | None = None) -> GraphDataset:
    r"""The dataset of ``source``: mapped from its cache entry, or built and cached.

    Args:
        source (DatasetSource): what the dataset is built from.
        build (callable): builds the dataset when the entry is absent or unusable.
        cache_dir (str or Path, optional): the cache folder (default:
            :func:`default_cache_dir`).
        verify (str): ``"auto"``, ``"sample"`` or ``"full"``: how much of each array file is
            checksummed on load (see the module docstring) (default: ``"auto"``).
        build_bytes (callable, optional): predicts the memory ``build`` needs; checked
            against the available memory before building (default: no check).

    Returns:
        GraphDataset: with tensors memory-mapped from the entry (copy-on-write), or, when the
        entry cannot be written (read-only or full disk: a warning says so), the built one.
    """
    check_verify(verify)
    entry = entry_dir(default_cache_dir() if cache_dir is None else cache_dir, source)
    if not all(p.is_file() for p in source.files):
        return build()  # the loader reports the missing file in its own words
    if entry.exists():
        try:
            return _open_entry(entry, source, verify)
        except _Unusable as problem:
            warnings.warn(f"dataset cache {entry}: {problem}; rebuilding", RuntimeWarning,
                          stacklevel=3)
    if build_bytes is not None:
        warn_if_short(f"building dataset {source.name or _canonical(source.identity)}",
                      build_bytes())
    fingerprint = _fingerprint(source)  # before building: a change meanwhile makes it stale
    ds = build()
    try:
        _save_entry(entry, source, fingerprint, ds)
    except OSError as err:
        warnings.warn(f"dataset cache {entry}: cannot write it ({err}); using the dataset "
                      f"uncached", RuntimeWarning, stacklevel=3)
        return ds
    try:  # the mapped entry replaces the built arrays, which are freed on return
        return _open_entry(entry, source, "sample")
    except _Unusable as problem:  # replaced meanwhile by a writer of another version
        warnings.warn(f"dataset cache {entry}: {problem} just after writing it; using the "
                      f"dataset uncached", RuntimeWarning, stacklevel=3)
        return ds
