"""Training checkpoints: written atomically by rank 0 after every epoch, verified on load.

A checkpoint holds everything needed to continue bitwise-identically at an epoch boundary:
the model and optimizer states, the (run, epoch) position, the RNG states of every rank
(torch, CUDA, numpy, python), the config, a hash of the row assignment, and the metrics so far.
The data loader needs no state of its own: its order and sampling depend only on
(seed, epoch, rank).
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnn_tt.training.config import TrainConfig
from gnn_tt.common.io import atomic_torch_save

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
        ``run``), ``model``, ``optimizers``, ``rng`` (one state per rank), ``run_state`` and
        ``finished_runs``, as written by the training loop.

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
