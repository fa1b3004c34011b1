"""One training epoch: a pass of one rank over its batches, with the loss and time reduced over
the ranks; and the timing of any collective stage (:func:`slowest_rank_seconds`)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from gnn_tt.common import distributed as dist
from gnn_tt.common.precision import autocast
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


def train_epoch(parts: RunParts, y: Tensor, epoch: int, device: torch.device,
                amp: bool = False, desc: str = "", progress: bool = False
                ) -> tuple[float, float]:
    r"""One pass over this rank's batches of epoch ``epoch``.

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
        (mean training loss over all ranks' seeds, wall seconds of the slowest rank).
    """
    ddp_model, model, optimizers, loader = (parts.ddp_model, parts.model, parts.optimizers,
                                            parts.loader)
    ddp_model.train()
    loader.set_epoch(epoch)
    # Loss summed on the device: no host sync per step.
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum loss * n, n)
    t0 = time.perf_counter()
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, total=len(loader)):
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
    seconds = slowest_rank_seconds(t0, device)
    loss_sum, count = dist.all_reduce_sum(total).tolist()
    return loss_sum / max(count, 1.0), seconds
