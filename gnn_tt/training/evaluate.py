"""Exact node-classification accuracy across ranks.

Each rank predicts its share of a split; the ranks all-reduce the sums (correct, count), never
average their ratios (docs/design.md, section 3: per-rank averages are biased when the shares
differ).
For OGB datasets the predictions are also gathered and scored by ``ogb``'s own ``Evaluator``,
which must agree with the sums.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from gnn_tt.common import distributed as dist
from gnn_tt.common.precision import autocast
from gnn_tt.data.graph import CSRGraph


def split_accuracy(y_pred: Tensor, y_true: Tensor, ogb_name: str | None = None) -> float:
    """Accuracy of this rank's predictions combined over all ranks.

    Args:
        y_pred (Tensor): int64 predicted classes of this rank's nodes.
        y_true (Tensor): int64 true classes of the same nodes.
        ogb_name (str, optional): score with ``ogb.nodeproppred.Evaluator(ogb_name)`` over the
            predictions gathered from all ranks, and check it equals the summed count.

    Shapes:
        - y_pred, y_true: [n_r] on rank r

    Returns:
        float: sum_r correct_r / sum_r n_r (0.0 for an empty split).
    """
    # (correct, count) in float64: exact for any split size below 2**53.
    sums = torch.tensor([float((y_pred == y_true).sum()), float(y_true.numel())],
                        dtype=torch.float64, device=y_pred.device)
    correct, count = dist.all_reduce_sum(sums).tolist()
    acc = correct / count if count else 0.0
    if ogb_name is not None and count:
        from ogb.nodeproppred import Evaluator

        pred_all = dist.all_gather_varlen(y_pred).cpu()
        true_all = dist.all_gather_varlen(y_true).cpu()
        ogb_acc = Evaluator(ogb_name).eval({"y_true": true_all[:, None],
                                            "y_pred": pred_all[:, None]})["acc"]
        assert abs(ogb_acc - acc) < 1e-9, (ogb_acc, acc)  # the same quantity, two ways
        acc = float(ogb_acc)
    return acc


@torch.no_grad()
def evaluate_sampled(model: torch.nn.Module, graph: CSRGraph, y: Tensor,
                     splits: dict[str, Tensor], fanouts: Sequence[int], batch_size: int,
                     device: torch.device, amp: bool = False, seed: int = 0,
                     ogb_name: str | None = None, pin_memory: bool = False) -> dict[str, float]:
    """Accuracy of ``model`` on each split with sampled neighbourhoods; each rank predicts its
    share ``split[rank::world_size]``.

    Every rank runs as many forward passes: the loader yields as many batches on every rank
    (a rank whose share is short gets a smaller or an empty last batch, see
    :class:`~gnn_tt.sampling.NeighborLoader`), and an empty batch still looks its (no) ids up.
    A table sharded over the ranks needs it: its lookups are collective.

    Args:
        model (Module): ``forward(batch: MiniBatch) -> logits [batch_size, C]``.
        graph (CSRGraph): the graph to sample from (host or device).
        y (Tensor): int64 labels of all nodes.
        splits (dict): split name -> int64 node ids, e.g. ``{"val": ..., "test": ...}``.
        fanouts (sequence of int): neighbours per hop; all -1 gives deterministic,
            full-neighbour predictions.
        batch_size (int): seeds per batch.
        device (torch.device): compute device.
        amp (bool): bf16 autocast on CUDA.
        seed (int): sampling seed (the same on every rank: it is combined with the rank).
        ogb_name (str, optional): see :func:`split_accuracy`.
        pin_memory (bool): pin batches before moving them to a GPU.

    Returns:
        dict: ``{name: accuracy}`` for every split, identical on every rank.
    """
    from gnn_tt.sampling import NeighborLoader

    was_training = model.training
    model.eval()
    out = {}
    for name, idx in splits.items():
        loader = NeighborLoader(graph, idx, fanouts, batch_size, shuffle=False,
                                rank=dist.rank(), world_size=dist.world_size(), seed=seed,
                                drop_last=False, pin_memory=pin_memory)
        preds, trues = [], []
        for batch in loader:
            batch = batch.to(device, non_blocking=pin_memory)
            with autocast(device, amp):
                logits = model(batch)  # [batch_size, C]
            preds.append(logits.argmax(dim=-1))
            trues.append(y[batch.n_id[: batch.batch_size].to(y.device)].to(device))
        y_pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=device)
        y_true = torch.cat(trues) if trues else torch.empty(0, dtype=torch.long, device=device)
        out[name] = split_accuracy(y_pred, y_true, ogb_name)
    model.train(was_training)
    return out


@torch.no_grad()
def evaluate_full(predict_all: Callable[[], Tensor], y: Tensor, splits: dict[str, Tensor],
                  ogb_name: str | None = None) -> dict[str, float]:
    """Accuracy from predictions of every node at once (layer-wise full-neighbour inference).

    Every rank computes the same ``predict_all()``; each then scores its share of every split
    through :func:`split_accuracy`, so the result is the same exact sum as the sampled path.

    Args:
        predict_all (callable): returns logits of all nodes, [N, C].
        y (Tensor): int64 labels of all nodes.
        splits (dict): split name -> int64 node ids.
        ogb_name (str, optional): see :func:`split_accuracy`.
    """
    pred = predict_all().argmax(dim=-1).cpu()  # [N]
    share = slice(dist.rank(), None, dist.world_size())
    return {name: split_accuracy(pred[idx[share]], y[idx[share]], ogb_name)
            for name, idx in splits.items()}
