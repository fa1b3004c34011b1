"""Hooks the caller of a :class:`gnn_tt.training.train.Trainer` registers to act after each
epoch, outside the training loop itself; and the fault injection the restart tests install
through the environment.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import ClassVar, Protocol

from gnn_tt.common import distributed as dist
from gnn_tt.training.checkpoint import restarted
from gnn_tt.training.run_state import EpochRecord

# "RANK:EPOCH" asks for a FailAfterEpoch(RANK, EPOCH) on the first attempt of a job.
FAIL_ENV = "GNN_TT_FAIL_AFTER_EPOCH"


class Callback(Protocol):
    """Called on every rank after each epoch, once its checkpoint is on disk."""

    def on_epoch_end(self, record: EpochRecord) -> None:
        ...


@dataclass(frozen=True)
class FailAfterEpoch:
    r"""Fault injection: rank ``rank`` exits at once (``os._exit``, status 17) after epoch
    ``epoch`` of any run, as a killed worker would; the other ranks are left to torchrun.

    Args:
        rank (int): the rank that dies.
        epoch (int): the epoch after whose checkpoint it dies.
    """

    rank: int
    epoch: int
    EXIT_STATUS: ClassVar[int] = 17

    @classmethod
    def from_env(cls) -> FailAfterEpoch | None:
        """The hook ``FAIL_ENV`` asks for, on the first attempt only
        (``TORCHELASTIC_RESTART_COUNT`` unset or 0), so the restarted job resumes and
        finishes; ``None`` otherwise.

        Raises:
            ValueError: ``FAIL_ENV`` is not of the form ``RANK:EPOCH``.
        """
        spec = os.environ.get(FAIL_ENV)
        if not spec or restarted():
            return None
        try:
            rank, epoch = (int(v) for v in spec.split(":"))
        except ValueError:
            raise ValueError(f"{FAIL_ENV} must be RANK:EPOCH, got {spec!r}") from None
        return cls(rank, epoch)

    def on_epoch_end(self, record: EpochRecord) -> None:
        if dist.rank() == self.rank and record.epoch == self.epoch:
            print(f"[{FAIL_ENV}] rank {self.rank} exits after epoch {record.epoch}",
                  file=sys.stderr, flush=True)
            os._exit(self.EXIT_STATUS)


def env_callbacks() -> list[Callback]:
    """The callbacks the environment asks for: a :class:`FailAfterEpoch` when ``FAIL_ENV`` is
    set on a first attempt, else none."""
    fail = FailAfterEpoch.from_env()
    return [] if fail is None else [fail]
