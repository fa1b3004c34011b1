"""Progress of a training job as its checkpoint stores it: one :class:`EpochRecord` per trained
epoch (the lines of ``metrics.jsonl``) and the :class:`RunState` of the run in progress.

Both go into the checkpoint as plain dicts (``to_dict``), so that
``torch.load(weights_only=True)`` reads it back; ``from_dict`` restores them on resume.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from torch import Tensor


@dataclass
class EpochRecord:
    r"""One trained epoch: a line of ``metrics.jsonl``.

    Args:
        run (int): the run (seed index), from 0.
        epoch (int): the epoch within the run, from 0.
        loss (float): mean training loss over all ranks' seeds.
        epoch_seconds (float): wall seconds of the training pass of the slowest rank (without
            the evaluation).
        val_acc (float, optional): validation accuracy; ``None`` for an epoch that was not
            evaluated. (default: ``None``)
        test_acc (float, optional): test accuracy; set together with ``val_acc``.
            (default: ``None``)
        eval_seconds (float, optional): wall seconds of the evaluation of the slowest rank;
            ``None`` for an epoch that was not evaluated (and in records written before it was
            measured). (default: ``None``)
        comm_bytes_per_step (dict, optional): bytes a rank handed to collectives per training
            step, by kind (:data:`gnn_tt.common.comm.KINDS`), mean over the ranks and steps;
            all zero in one process; ``None`` in records written before it was counted.
            (default: ``None``)
    """

    run: int
    epoch: int
    loss: float
    epoch_seconds: float
    val_acc: float | None = None
    test_acc: float | None = None
    eval_seconds: float | None = None
    comm_bytes_per_step: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict; an epoch that was not evaluated has no ``val_acc``,
        ``test_acc`` and ``eval_seconds`` keys, one without a byte count no
        ``comm_bytes_per_step``."""
        data: dict[str, Any] = {"run": self.run, "epoch": self.epoch, "loss": self.loss,
                                "epoch_seconds": self.epoch_seconds}
        if self.val_acc is not None:
            data.update(val_acc=self.val_acc, test_acc=self.test_acc)
        if self.eval_seconds is not None:
            data.update(eval_seconds=self.eval_seconds)
        if self.comm_bytes_per_step is not None:
            data.update(comm_bytes_per_step=dict(self.comm_bytes_per_step))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpochRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def line(self) -> str:
        """The progress line printed after the epoch."""
        text = (f"run {self.run} epoch {self.epoch}: loss {self.loss:.4f}, "
                f"{self.epoch_seconds:.2f} s")
        if self.val_acc is not None:
            text += f", val {self.val_acc:.4f}, test {self.test_acc:.4f}"
        if self.eval_seconds is not None:
            text += f" (eval {self.eval_seconds:.2f} s)"
        sent = sum((self.comm_bytes_per_step or {}).values())
        if sent:
            text += f", {sent / 1e6:.3f} MB to collectives per step"
        return text


def mean_comm_bytes(history: Sequence[EpochRecord]) -> dict[str, float]:
    """Bytes a rank handed to collectives per training step, by kind, mean over the epochs of
    ``history`` that counted them (empty when none did)."""
    counted = [r.comm_bytes_per_step for r in history if r.comm_bytes_per_step is not None]
    return {k: statistics.fmean(c.get(k, 0.0) for c in counted)
            for k in dict.fromkeys(k for c in counted for k in c)}


@dataclass
class RunState:
    r"""Progress of the run being trained: its best validation epoch so far and its epoch
    times.

    Args:
        best_val (float, optional): best validation accuracy so far; below any accuracy
            before the first evaluation, so that one becomes the best. (default: ``-1.0``)
        best_test (float, optional): test accuracy of the best epoch. (default: ``0.0``)
        best_epoch (int, optional): the best epoch; ``-1`` before the first evaluation.
            (default: ``-1``)
        epoch_seconds (list of float, optional): wall seconds of each trained epoch of the
            run. (default: ``[]``)
        best_model (dict, optional): the model's ``state_dict`` at the best epoch, kept only
            for layer-wise inference (``layerwise_inference``). (default: ``None``)
    """

    best_val: float = -1.0
    best_test: float = 0.0
    best_epoch: int = -1
    epoch_seconds: list[float] = field(default_factory=list)
    best_model: dict[str, Tensor] | None = None

    def improve(self, epoch: int, val_acc: float, test_acc: float) -> bool:
        """Make ``epoch`` the best when its validation accuracy beats the best so far (a tie
        keeps the earlier epoch); returns whether it did."""
        if val_acc <= self.best_val:
            return False
        self.best_val, self.best_test, self.best_epoch = val_acc, test_acc, epoch
        return True

    def to_dict(self) -> dict[str, Any]:
        """The state as a plain dict. ``best_model`` is passed by reference, not copied
        (``dataclasses.asdict`` would deep-copy it): it can be as large as a full table."""
        return {"best_val": self.best_val, "best_test": self.best_test,
                "best_epoch": self.best_epoch, "epoch_seconds": list(self.epoch_seconds),
                "best_model": self.best_model}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)
