"""Training checkpoints: written atomically by rank 0 after every epoch, verified on load.

A checkpoint holds everything needed to continue bitwise-identically at an epoch boundary:
the model and optimizer states, the (run, epoch) position, the RNG states of every rank
(torch, CUDA, numpy, python), the config, a hash of the row assignment, and the metrics so far.
The data loader needs no state of its own: its order and sampling depend only on
(seed, epoch, rank).
"""
from __future__ import annotations

import json
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from gnn_tt.common import distributed as dist
from gnn_tt.common.io import atomic_torch_save, atomic_write_text
from gnn_tt.training.config import TrainConfig
from gnn_tt.training.run_state import EpochRecord, RunState
from gnn_tt.training.summary import RunResult

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, or written for another config / layout."""


def rng_state() -> dict[str, Any]:
    """This process's RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (see :func:`load_checkpoint` for the keys) atomically to ``path``: a
    crash mid-write leaves the previous checkpoint intact."""
    return atomic_torch_save({"format": FORMAT_VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike, config: TrainConfig,
                    row_assignment_hash: str | None) -> dict[str, Any]:
    """Read and verify a checkpoint.

    Args:
        path (str or PathLike): the checkpoint file.
        config (TrainConfig): the config of the job that wants to resume; its training fields
            (all but :data:`gnn_tt.training.config.RUNTIME_FIELDS`) must equal the checkpoint's.
        row_assignment_hash (str, optional): hash of this job's ``row_of_node`` (None for
            inputs without one); must equal the checkpoint's.

    Returns:
        dict: ``config``, ``row_assignment_hash``, ``run``, ``epoch`` (epochs completed in
        ``run``), ``model``, ``optimizers``, ``rng`` (one state per rank), ``run_state``
        (:meth:`RunState.to_dict`; empty at the start of a run), ``finished_runs``
        (:meth:`RunResult.to_dict` of each) and ``history`` (:meth:`EpochRecord.to_dict` of
        each), as written by :meth:`Checkpointer.save`.

    Raises:
        CheckpointError: unreadable or corrupt file (naming the path), a different config
            (naming the differing fields) or a different row assignment.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or unreadable "
                              f"({type(err).__name__}: {str(err)[:200]}); delete it to start "
                              f"over") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a gnn_tt checkpoint of format "
                              f"{FORMAT_VERSION}")
    saved = TrainConfig.from_dict(state["config"])
    differing = config.differing_fields(saved)
    if differing:
        details = ", ".join(f"{k}: checkpoint {saved.training_dict()[k]!r} vs now "
                            f"{config.training_dict()[k]!r}" for k in differing)
        raise CheckpointError(f"checkpoint {str(path)!r} was written by a different config "
                              f"(differing fields: {details}); use another --output or drop "
                              f"--resume")
    if state["row_assignment_hash"] != row_assignment_hash:
        raise CheckpointError(f"checkpoint {str(path)!r} was written for a different row "
                              f"assignment (hash {state['row_assignment_hash']} vs now "
                              f"{row_assignment_hash}): the partition changed")
    return state


class Checkpointer:
    r"""The job's checkpoint: saved after every epoch with ``metrics.jsonl`` (the same
    history, one JSON line per epoch), and found again when the job resumes.

    Args:
        output (str or PathLike): the output directory.
        config (TrainConfig): the job's config, stored in the checkpoint and compared with a
            checkpoint's on resume.
        row_assignment_hash (str, optional): hash of the job's ``row_of_node`` (``None`` for
            inputs without one).
    """

    def __init__(self, output: str | os.PathLike, config: TrainConfig,
                 row_assignment_hash: str | None) -> None:
        self.path = Path(output) / CHECKPOINT_NAME
        self.metrics_path = Path(output) / "metrics.jsonl"
        self.config, self.row_assignment_hash = config, row_assignment_hash

    def restore(self) -> dict[str, Any] | None:
        """The checkpoint to continue from (see :func:`load_checkpoint`) when resuming
        (``config.resume`` or a torchrun restart) and one exists; else ``None``."""
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        if not (self.config.resume or restarted) or not self.path.exists():
            return None
        return load_checkpoint(self.path, self.config, self.row_assignment_hash)

    def save(self, run: int, epoch: int, model: torch.nn.Module,
             optimizers: dict[str, torch.optim.Optimizer], run_state: RunState | None,
             finished: Sequence[RunResult], history: Sequence[EpochRecord]) -> None:
        r"""Gather every rank's RNG states; rank 0 writes the checkpoint and
        ``metrics.jsonl``. Collective: every rank calls it.

        Args:
            run (int): the run to continue with.
            epoch (int): epochs of ``run`` completed.
            model (torch.nn.Module): the model (not its DDP wrapper).
            optimizers (dict): the run's optimizers by name.
            run_state (RunState, optional): progress of ``run``; ``None`` at a run's start
                (stored as an empty dict).
            finished (list of RunResult): the runs finished so far.
            history (list of EpochRecord): every epoch trained so far.
        """
        rngs = [rng_state()]
        if dist.world_size() > 1:
            rngs = [None] * dist.world_size()
            torch.distributed.all_gather_object(rngs, rng_state())
        if dist.is_main():
            save_checkpoint(self.path, {
                "config": self.config.to_dict(), "row_assignment_hash": self.row_assignment_hash,
                "run": run, "epoch": epoch, "model": model.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "rng": rngs, "run_state": {} if run_state is None else run_state.to_dict(),
                "finished_runs": [r.to_dict() for r in finished],
                "history": [r.to_dict() for r in history]})
            atomic_write_text(self.metrics_path, "".join(
                json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in history))
        dist.barrier()  # the checkpoint is on disk before any rank moves on (or dies)
