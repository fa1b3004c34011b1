"""torch.distributed from the environment ``torchrun`` sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT): one code path for a single process and for N processes.

NCCL on CUDA, gloo on CPU. Nothing here picks a port: torchrun (or the caller) provides it.
"""
from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist


def env_is_distributed() -> bool:
    """True when launched by torchrun (``RANK`` is set)."""
    return "RANK" in os.environ


def init_from_env(device: torch.device) -> bool:
    """Initialize the default process group from the torchrun environment if ``RANK`` is set
    and no group exists yet.

    Args:
        device (torch.device): the compute device; CUDA selects NCCL, CPU selects gloo.

    Returns:
        bool: True if this call created the group (the caller then owns :func:`cleanup`).
    """
    if not env_is_distributed() or dist.is_initialized():
        return False
    for name in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(f"RANK is set but {name} is not: launch with torchrun, or set "
                               f"RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT together")
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict = {"device_id": device} if device.type == "cuda" else {}
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun's agent hosts the store and keeps it across restarts: the keys of the dead
        # attempt (its ranks' addresses) would be read again and the new ranks would try to
        # connect to dead ports. A prefix per restart attempt keeps the attempts apart.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                              int(os.environ["WORLD_SIZE"]), is_master=False)
        kwargs.update(store=dist.PrefixStore(f"gnn_tt/attempt_{attempt}", store),
                      rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    else:
        kwargs["init_method"] = "env://"
    dist.init_process_group(backend=backend, **kwargs)
    return True


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes files."""
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (no-op in a single process) and return it."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise max of ``tensor`` over all ranks in place and return it."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s value and return it."""
    if is_initialized():
        dist.broadcast(tensor, src=src)
    return tensor


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_varlen(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate 1-D tensors of different lengths from all ranks in rank order.

    Shapes:
        - input: [n_r] on rank r
        - output: [sum_r n_r] on every rank
    """
    if not is_initialized():
        return tensor
    # Lengths first, then pad to the longest (all_gather needs equal shapes).
    length = torch.tensor([tensor.numel()], device=tensor.device)
    lengths = [torch.zeros_like(length) for _ in range(world_size())]
    dist.all_gather(lengths, length)
    longest = int(max(int(n) for n in lengths))
    padded = torch.zeros(longest, dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.numel()] = tensor
    parts = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(n)] for p, n in zip(parts, lengths)])


def cleanup(owned: bool) -> None:
    """Destroy the default group if this process created it (``owned`` from
    :func:`init_from_env`); a group created by the caller is left alone."""
    if owned and is_initialized():
        # DDP wrappers no longer referenced but kept alive by reference cycles are freed first,
        # while the default group still holds its process group: freed after it, a DDP reducer
        # runs the gloo group's destructor with the GIL held, which joins gloo threads that
        # may need the GIL (a deadlock seen at worker exit; pytorch issue 56297).
        gc.collect()
        dist.destroy_process_group()
