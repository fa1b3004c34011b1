"""One training epoch: a pass of one rank over its batches, with the loss, the time and the
bytes handed to collectives reduced over the ranks; and the timing of any collective stage
(:func:`slowest_rank_seconds`)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from gnn_tt.common import distributed as dist
from gnn_tt.common.comm import KINDS, CommCounter, counting
from gnn_tt.common.precision import autocast
from gnn_tt.embedding.sharded_table import ShardedNodeEmbedding
from gnn_tt.models import NodeClassifier
from gnn_tt.sampling import MiniBatch


class EpochLoader(Protocol):
    """The batches of an epoch: :class:`gnn_tt.sampling.NeighborLoader`, or a wrapper of one."""

    def set_epoch(self, epoch: int) -> None:
        ...

    def __len__(self) -> int:
        ...

    def __iter__(self) -> Iterator[MiniBatch]:
        ...


def slowest_rank_seconds(t0: float, device: torch.device) -> float:
    """Wall seconds since ``t0`` (a ``time.perf_counter()`` reading) of the slowest rank, once
    the work queued on ``device`` is done. Collective: every rank calls it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # queued kernels belong to the stage being timed
    seconds = torch.tensor([time.perf_counter() - t0], dtype=torch.float64, device=device)
    return float(dist.all_reduce_max(seconds))


@dataclass
class RunParts:
    r"""What one run trains.

    Args:
        model (NodeClassifier): the model.
        ddp_model (torch.nn.Module): its DDP wrapper; the model itself in one process.
        optimizers (dict): the optimizers, ``gnn`` and (for an input with parameters) ``emb``.
        loader (EpochLoader): this rank's training batches.
    """

    model: NodeClassifier
    ddp_model: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    loader: EpochLoader


@dataclass
class EpochStats:
    r"""What :func:`train_epoch` measured.

    Args:
        loss (float): mean training loss over all ranks' seeds.
        seconds (float): wall seconds of the slowest rank.
        steps (int): training steps of this rank (as many on every rank: each is collective).
        comm (CommCounter): bytes this rank handed to collectives over the epoch's steps, by
            kind (see :mod:`gnn_tt.common.comm`); all zero in one process.
        comm_bytes_per_step (dict[str, float]): bytes a rank handed to collectives per step,
            by kind, mean over the ranks and steps.
    """

    loss: float
    seconds: float
    steps: int
    comm: CommCounter
    comm_bytes_per_step: dict[str, float]


def _sharded_bytes_sent(model: NodeClassifier) -> int:
    """Bytes the sharded tables of ``model`` have handed to ``all_to_all_single`` so far
    (they count their own: :attr:`ShardedNodeEmbedding.comm_bytes_sent`)."""
    return sum(m.comm_bytes_sent for m in model.modules() if isinstance(m, ShardedNodeEmbedding))


def train_epoch(parts: RunParts, y: Tensor, epoch: int, device: torch.device,
                amp: bool = False, desc: str = "", progress: bool = False) -> EpochStats:
    r"""One pass over this rank's batches of epoch ``epoch``, counting the bytes each step
    hands to collectives (DDP's all-reduce and buffer broadcast, the full table's gradient
    all-gather or all-to-alls; see :mod:`gnn_tt.common.comm`).

    Args:
        parts (RunParts): the model, its wrapper, optimizers and loader.
        y (Tensor): int64 labels of every node, on ``device``.
        epoch (int): selects the loader's order and sampling stream.
        device (torch.device): where the batches go.
        amp (bool, optional): bf16 autocast of the forward pass. (default: ``False``)
        desc (str, optional): label of the progress bar. (default: ``""``)
        progress (bool, optional): show a progress bar. (default: ``False``)

    Shapes:
        - y: [N]

    Returns:
        EpochStats: the loss, the time and the bytes communicated.
    """
    model, loader = parts.model, parts.loader
    parts.ddp_model.train()
    loader.set_epoch(epoch)
    # Loss summed on the device: no host sync per step.
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum loss * n, n)
    counter, steps = CommCounter(), 0
    sharded_before = _sharded_bytes_sent(model)
    t0 = time.perf_counter()
    with counting(counter):
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False,
                          total=len(loader)):
            _train_step(parts, y, batch, device, amp, total)
            steps += 1
    seconds = slowest_rank_seconds(t0, device)
    counter.add("table_all_to_all", _sharded_bytes_sent(model) - sharded_before)
    # One reduction for the loss and the bytes: [sum loss * n, n, bytes of each kind].
    sums = dist.all_reduce_sum(torch.cat([total, counter.as_tensor().to(device)])).tolist()
    per_step = max(steps, 1) * dist.world_size()
    return EpochStats(loss=sums[0] / max(sums[1], 1.0), seconds=seconds, steps=steps,
                      comm=counter,
                      comm_bytes_per_step={k: b / per_step for k, b in zip(KINDS, sums[2:])})


def _train_step(parts: RunParts, y: Tensor, batch: MiniBatch, device: torch.device, amp: bool,
                total: Tensor) -> None:
    """One optimizer step on ``batch``; adds ``(loss * n, n)`` to ``total`` on the device (no
    host sync)."""
    ddp_model, model, optimizers = parts.ddp_model, parts.model, parts.optimizers
    batch = batch.to(device, non_blocking=True)
    target = y[batch.n_id[: batch.batch_size]]  # [batch_size]
    with autocast(device, amp):
        logits = ddp_model(batch)  # [batch_size, C]
    loss = F.cross_entropy(logits.float(), target)
    for o in optimizers.values():
        o.zero_grad(set_to_none=True)
    loss.backward()
    model.node_input.sync_gradients()
    for o in optimizers.values():
        o.step()
    total[0] += loss.detach().double() * batch.batch_size
    total[1] += batch.batch_size
