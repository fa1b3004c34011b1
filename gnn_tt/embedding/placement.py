r"""Where the full learnable node table (``--emb full``, ``full+features``) lives, and the rule
that picks it (``--emb-placement``):

- ``host``: :class:`~gnn_tt.embedding.node_input.FullNodeEmbedding`, a replica per process in
  host memory; each batch's rows are gathered on the host and copied to the device.
- ``device``: :class:`~gnn_tt.embedding.device_table.DeviceNodeEmbedding`, a replica per
  process on its training device.
- ``sharded``: :class:`~gnn_tt.embedding.sharded_table.ShardedNodeEmbedding`, rank ``r`` holds
  rows ``r * ceil(N / W) ..`` on its device and fetches the others with all-to-alls.
- ``auto``: :func:`choose_placement`.

Every placement keeps the table and ``SparseAdam``'s two moment estimates beside it: a
process holds ``3 x rows x D`` float32 numbers (:func:`table_bytes`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import psutil
import torch
import torch.distributed as dist

from gnn_tt.common.checks import check_positive_int
from gnn_tt.embedding.device_table import DeviceNodeEmbedding
from gnn_tt.embedding.node_input import FullNodeEmbedding, NodeInput
from gnn_tt.embedding.sharded_table import ShardedNodeEmbedding

# The values of --emb-placement; every one but "auto" names a table class.
PLACEMENTS = ("auto", "host", "device", "sharded")
# Share of the free device memory ``auto`` lets the table and its optimizer state take: the
# rest holds the graph, the sampled blocks and the GNN's activations.
DEVICE_MEMORY_SHARE = 0.5
# float32 numbers per table entry: the entry and SparseAdam's exp_avg and exp_avg_sq.
_COPIES, _ELEMENT_SIZE = 3, 4


def table_bytes(num_nodes: int, embedding_dim: int, shards: int = 1) -> int:
    """Bytes one process holds for its part of the table with its ``SparseAdam`` state:
    ``3 x ceil(num_nodes / shards) x embedding_dim x 4``.

    Args:
        num_nodes (int): rows of the table.
        embedding_dim (int): row width.
        shards (int): number of shards (``1``: the whole table) (default: ``1``).
    """
    for name, value in (("num_nodes", num_nodes), ("embedding_dim", embedding_dim),
                        ("shards", shards)):
        check_positive_int(name, value, "table_bytes")
    return _COPIES * math.ceil(num_nodes / shards) * embedding_dim * _ELEMENT_SIZE


@dataclass(frozen=True)
class FreeMemory:
    r"""The memory a process may give the table.

    Args:
        device (torch.device): the training device.
        device_bytes (int): free memory of ``device`` (``torch.cuda.mem_get_info``); on the
            CPU, where device and host are the same memory, ``host_bytes``.
        host_bytes (int): available host memory (``psutil``) divided among the processes of
            this host.
    """

    device: torch.device
    device_bytes: int
    host_bytes: int

    @classmethod
    def measure(cls, device: torch.device, processes_on_host: int = 1) -> FreeMemory:
        """This process's share of the memory free now.

        Args:
            device (torch.device): the training device.
            processes_on_host (int): training processes sharing this host's memory (torchrun's
                ``LOCAL_WORLD_SIZE``) (default: ``1``).
        """
        check_positive_int("processes_on_host", processes_on_host, "FreeMemory.measure")
        host = psutil.virtual_memory().available // processes_on_host
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else host
        return cls(device, int(free), int(host))


def _size(num_bytes: float) -> str:
    """``num_bytes`` in the largest binary unit that keeps it >= 1 (``2.50 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024:
            return f"{num_bytes:.0f} B" if unit == "B" else f"{num_bytes:.2f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.2f} TiB"


def choose_placement(requested: str, num_nodes: int, embedding_dim: int, world_size: int,
                     memory: FreeMemory, share: float = DEVICE_MEMORY_SHARE) -> tuple[str, str]:
    r"""The placement of a ``num_nodes x embedding_dim`` table and the reason for it.

    ``auto`` on a GPU picks ``device`` when :func:`table_bytes` fits in ``share`` of the free
    device memory, else ``sharded`` when there are several processes and a shard fits in that
    share, else ``host``. On the CPU the device *is* the host: ``auto`` picks ``host``.
    ``sharded`` in a single process would be one shard of every row on the training device:
    that is the ``device`` placement, which it becomes (the reason says so).

    The placement chosen must fit: the table (or this rank's shard) with its optimizer state
    in the memory free where it lives, all of it (not only ``share``).

    Args:
        requested (str): one of :data:`PLACEMENTS`.
        num_nodes (int): rows of the table.
        embedding_dim (int): row width.
        world_size (int): training processes (the shards of a ``sharded`` table).
        memory (FreeMemory): the memory free to each process (the least over the ranks, so
            that every rank decides alike).
        share (float): share of the free device memory ``auto`` may fill
            (default: :data:`DEVICE_MEMORY_SHARE`).

    Returns:
        (str, str): ``host``, ``device`` or ``sharded``, and one line saying why.

    Raises:
        ValueError: ``requested`` is not a placement, or the placement cannot hold the table
            (the message gives the bytes it needs and the bytes available).
    """
    if requested not in PLACEMENTS:
        raise ValueError(f"unknown emb_placement {requested!r} (valid: {', '.join(PLACEMENTS)})")
    check_positive_int("world_size", world_size, "choose_placement")
    whole = table_bytes(num_nodes, embedding_dim)
    shard = table_bytes(num_nodes, embedding_dim, world_size)
    free, where = memory.device_bytes, str(memory.device)
    if requested == "sharded" and world_size == 1:
        placement = "device"
        reason = (f"sharded over 1 process is one shard of every row on {where}, which is the "
                  f"device placement: using it (launch under torchrun with several processes "
                  f"to shard)")
    elif requested != "auto":
        placement, reason = requested, "requested"
    elif memory.device.type == "cpu":
        placement, reason = "host", "auto on the CPU, where the device is the host"
    elif whole <= share * free:
        placement = "device"
        reason = (f"auto: table + SparseAdam state ({_size(whole)}) fit in {share:.0%} of the "
                  f"{_size(free)} free on {where}")
    elif world_size > 1 and shard <= share * free:
        placement = "sharded"
        reason = (f"auto: table + SparseAdam state ({_size(whole)}) exceed {share:.0%} of the "
                  f"{_size(free)} free on {where}; a shard of {world_size} ({_size(shard)}) "
                  f"fits")
    else:
        placement = "host"
        reason = (f"auto: table + SparseAdam state ({_size(whole)})"
                  + (f" and a shard of {world_size} ({_size(shard)})" if world_size > 1 else "")
                  + f" exceed {share:.0%} of the {_size(free)} free on {where}")
    needed, available, holder = {
        "host": (whole, memory.host_bytes, "host memory"),
        "device": (whole, free, "free on " + where),
        "sharded": (shard, free, "free on " + where)}[placement]
    if needed > available:
        what = "this rank's shard" if placement == "sharded" else "the table"
        raise ValueError(
            f"emb_placement {placement!r} ({reason}) cannot hold the {num_nodes:,} x "
            f"{embedding_dim} full table: {what} and its SparseAdam state need {needed:,} bytes "
            f"({_size(needed)}), {available:,} bytes ({_size(available)}) are {holder}; use "
            f"another --emb-placement, more processes with sharded, a smaller --emb-dim, or "
            f"--emb tt")
    return placement, reason


def build_full_table(placement: str, num_nodes: int, embedding_dim: int, *,
                     device: torch.device | str = "cpu", seed: int = 0,
                     process_group: dist.ProcessGroup | None = None) -> NodeInput:
    r"""The full table of ``placement``, starting from the same values whatever the placement.

    Args:
        placement (str): ``host``, ``device`` or ``sharded`` (resolve ``auto`` first with
            :func:`choose_placement`).
        num_nodes (int): rows of the table.
        embedding_dim (int): row width.
        device (torch.device or str): the training device: where the output goes, and where
            the table lives but for ``host`` (default: ``"cpu"``).
        seed (int): seed of the table's initialization (default: ``0``).
        process_group (ProcessGroup, optional): ``sharded`` only: the ranks sharing the table,
            best a group of its own (default: the default group, if any).
    """
    if placement == "host":
        return FullNodeEmbedding(num_nodes, embedding_dim, device=device, seed=seed)
    if placement == "device":
        return DeviceNodeEmbedding(num_nodes, embedding_dim, device=device, seed=seed)
    if placement == "sharded":
        return ShardedNodeEmbedding(num_nodes, embedding_dim, device=device, seed=seed,
                                    process_group=process_group)
    raise ValueError(f"'build_full_table' needs placement host, device or sharded, got "
                     f"{placement!r} (resolve 'auto' with choose_placement)")
