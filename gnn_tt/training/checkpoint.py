"""Training checkpoints: written atomically by rank 0 after every epoch, verified on load.

A checkpoint holds everything needed to continue bitwise-identically at an epoch boundary:
the model and optimizer states, the (run, epoch) position, the RNG states of every rank
(torch, CUDA, numpy, python), the config, a hash of the row assignment, the metrics so far and
the wall seconds the job has run. The data loader needs no state of its own: its order and
sampling depend only on (seed, epoch, rank).

The output directory belongs to one job: :func:`check_output` refuses a non-empty one unless
the job resumes it or overwrites it, and :func:`clear_output` removes an overwritten job's files.

A table sharded over the ranks (:class:`~gnn_tt.embedding.sharded_table.ShardedNodeEmbedding`)
is not in the model's state: every rank writes its rows and their optimizer state to a file of
its own, ``checkpoint.shard{rank}-of-{world_size}.pt`` (:func:`shard_path`), before rank 0
writes ``checkpoint.pt``, which records the number of shards; a shard is read back only beside
the checkpoint of the same (run, epoch) and under as many ranks.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import types
import typing
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from gnn_tt.common import distributed as dist
from gnn_tt.common.io import atomic_torch_save, atomic_write_text
from gnn_tt.embedding.sharded_table import ShardedNodeEmbedding
from gnn_tt.training.config import TrainConfig
from gnn_tt.training.run_state import EpochRecord, RunState
from gnn_tt.training.summary import RunResult

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1
# A job's files in its output directory that would outlive an overwrite (config.json is
# replaced by the new job's), as glob patterns, in the order they are removed: the summary
# first, so that a crash midway never leaves a run that looks finished, the checkpoint last
# (after the shards of a sharded table, current and previous: see shard_path).
RUN_FILES = ("summary.json", "metrics.jsonl", "checkpoint.shard*-of-*.pt", CHECKPOINT_NAME)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, or written for another config / layout."""


def restarted() -> bool:
    """Whether torchrun restarted this job after a failure (``TORCHELASTIC_RESTART_COUNT``
    > 0): a restart resumes whatever its flags say, since it repeats the first command line."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def resuming(config: TrainConfig) -> bool:
    """Whether the job continues from its checkpoint when one exists: ``config.resume`` or a
    torchrun restart."""
    return config.resume or restarted()


def check_output(config: TrainConfig) -> None:
    """Refuse to start in a non-empty output directory unless the job resumes
    (:func:`resuming`) or ``config.overwrite`` replaces it. Rank 0 looks and every rank learns
    its answer (collective), so that the ranks agree even while rank 0 starts writing.

    Raises:
        FileExistsError: the directory is not empty (naming it and the two flags).
    """
    if resuming(config) or config.overwrite:
        return
    out = Path(config.output)
    taken = dist.is_main() and out.is_dir() and any(out.iterdir())
    if dist.world_size() > 1:
        taken = dist.broadcast_object(taken)
    if taken:
        raise FileExistsError(f"output directory {str(out)!r} is not empty; pass --resume to "
                              f"continue its run or --overwrite to replace it")


def clear_output(output: str | os.PathLike) -> None:
    """Remove the files of an earlier job from ``output`` (:data:`RUN_FILES`), before an
    overwriting job writes its ``config.json``: a crash midway leaves the old ``config.json``
    beside what is left of the old job's files, never an old checkpoint beside a new config."""
    for pattern in RUN_FILES:
        for path in sorted(Path(output).glob(pattern)):
            path.unlink(missing_ok=True)


def shard_path(output: str | os.PathLike, rank: int, world_size: int,
               previous: bool = False) -> Path:
    """The checkpoint file of rank ``rank``'s shard of a table sharded over ``world_size``
    ranks: ``checkpoint.shard{rank}-of-{world_size}.pt``. While a save is under way the one
    it replaces is kept as ``checkpoint.shard{rank}-of-{world_size}.prev.pt`` (``previous``),
    so that a crash between the shards and ``checkpoint.pt`` leaves a shard of the
    checkpoint's epoch on disk."""
    return Path(output) / f"checkpoint.shard{rank}-of-{world_size}{'.prev' if previous else ''}.pt"


def sharded_table(model: torch.nn.Module) -> ShardedNodeEmbedding | None:
    """The table of ``model`` that is sharded over the ranks, if any: its rows are
    checkpointed per rank, beside the model's state."""
    tables = [m for m in model.modules() if isinstance(m, ShardedNodeEmbedding)]
    assert len(tables) <= 1, "a model with two sharded tables"
    return tables[0] if tables else None


def _shard_optimizer(table: ShardedNodeEmbedding,
                     optimizers: dict[str, torch.optim.Optimizer]) -> str | None:
    """The name of the optimizer that steps ``table``'s shard (its state is the shard's, not
    the model's), if any."""
    names = [k for k, o in optimizers.items()
             if any(p is table.weight for group in o.param_groups for p in group["params"])]
    assert len(names) <= 1, f"the shard is stepped by optimizers {names}"
    return names[0] if names else None


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


def _numpy_state(state: dict[str, Any]) -> tuple:
    """The numpy part of an :func:`rng_state` in the form ``np.random.set_state`` takes."""
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    return kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss


def _python_state(state: dict[str, Any]) -> tuple:
    """The python part of an :func:`rng_state` in the form ``random.setstate`` takes."""
    version, internal, gauss_next = state["python"]
    return version, tuple(internal), gauss_next


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_state(state))
    random.setstate(_python_state(state))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_problem(state: Any) -> str | None:
    """Why :func:`set_rng_state` would fail on ``state``, found by loading each part into a
    fresh generator (the global ones stay untouched); ``None`` when it would not."""
    if not isinstance(state, dict):
        return f"not a dict but {type(state).__name__}"
    try:
        torch.Generator().set_state(state["torch"])
        np.random.RandomState().set_state(_numpy_state(state))
        random.Random().setstate(_python_state(state))
    except Exception as err:  # whatever a generator refuses, the state is unusable
        return f"{type(err).__name__}: {str(err)[:100]}"
    if not _conforms(state.get("cuda", []), list[Tensor]):
        return "its cuda states are not a list of tensors"
    return None


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (see :func:`load_checkpoint` for the keys) atomically to ``path``: a
    crash mid-write leaves the previous checkpoint intact."""
    return atomic_torch_save({"format": FORMAT_VERSION, **state}, path)


# The keys Checkpointer.save writes and the types resuming reads them as. A key added to the
# checkpoint later is optional, so that checkpoints written before it still load.
_REQUIRED_KEYS: dict[str, Any] = {
    "config": dict[str, Any], "row_assignment_hash": str | None, "run": int, "epoch": int,
    "model": dict[str, Tensor], "optimizers": dict[str, dict[str, Any]],
    "rng": list[dict[str, Any]], "run_state": dict[str, Any],
    "finished_runs": list[dict[str, Any]], "history": list[dict[str, Any]]}
_OPTIONAL_KEYS: dict[str, Any] = {"elapsed_seconds": float, "emb_shards": int | None}
# The keys of a shard file (Checkpointer.save on every rank of a sharded table).
_SHARD_KEYS: dict[str, Any] = {"config": dict[str, Any], "run": int, "epoch": int,
                               "table": dict[str, Any], "best": dict[str, Any] | None}


def _conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of type ``hint``: a class, ``Any``, a union (``X | None``),
    ``list[X]`` or ``dict[K, V]``, checked element by element. ``int`` excludes ``bool``;
    ``float`` accepts an ``int`` too."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(k, args[0]) and _conforms(v, args[1])
                                               for k, v in value.items())
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return isinstance(value, (int, hint)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _record_problem(cls: type, data: Any) -> str | None:
    """Why ``cls.from_dict(data)`` would not give a ``cls`` (a dataclass) whose fields have
    their annotated types; ``None`` when it would."""
    try:
        record = cls.from_dict(data)
    except (AttributeError, TypeError, ValueError) as err:
        return f"not {cls.__name__} fields ({err})"
    hints = typing.get_type_hints(cls)
    wrong = [f.name for f in dataclasses.fields(cls)
             if not _conforms(getattr(record, f.name), hints[f.name])]
    return f"{cls.__name__} fields of the wrong type: {wrong}" if wrong else None


def _optimizer_problem(state: dict[str, Any]) -> str | None:
    """Why ``state`` is not an ``Optimizer.state_dict()``; ``None`` when it is one."""
    if not _conforms(state.get("state"), dict[int, dict[str, Any]]):
        return "its 'state' is not a dict of per-parameter dicts"
    if not _conforms(state.get("param_groups"), list[dict[str, Any]]) or not all(
            _conforms(group.get("params"), list[int]) for group in state["param_groups"]):
        return "its 'param_groups' are not dicts holding 'params' lists"
    return None


def _structure_problem(state: dict[str, Any]) -> str | None:
    """Why ``state`` (a dict read from a checkpoint file) is not what
    :meth:`Checkpointer.save` writes, or ``None``: every key that resuming reads is there with
    the type it is read as, the records rebuild as their dataclasses, the RNG and optimizer
    states load, and the position agrees with the finished runs and the run's progress."""
    for key, hint in {**_REQUIRED_KEYS, **_OPTIONAL_KEYS}.items():
        if key not in state:
            if key in _REQUIRED_KEYS:
                return f"no {key!r}"
        elif not _conforms(state[key], hint):
            expected = str(hint) if typing.get_args(hint) else hint.__name__
            return f"{key!r} is not of type {expected.replace('typing.', '')}"
    try:
        saved = TrainConfig.from_dict(state["config"])
    except (TypeError, ValueError) as err:
        return f"config: {err}"
    run, epoch, finished = state["run"], state["epoch"], state["finished_runs"]
    if run < 0 or not 0 <= epoch <= saved.epochs:
        return f"run {run}, epoch {epoch}: need run >= 0 and 0 <= epoch <= {saved.epochs}"
    if len(finished) != run:
        return f"{len(finished)} finished runs before run {run}"
    for key, cls in (("finished_runs", RunResult), ("history", EpochRecord)):
        for i, record in enumerate(state[key]):
            problem = _record_problem(cls, record)
            if problem is not None:
                return f"{key}[{i}]: {problem}"
    if epoch > 0 or state["run_state"]:
        problem = _record_problem(RunState, state["run_state"])
        if problem is not None:
            return f"run_state: {problem}"
        timed = len(RunState.from_dict(state["run_state"]).epoch_seconds)
        if timed != epoch:
            return f"run_state: {timed} epoch times after {epoch} epochs"
    if not state["rng"]:
        return "no RNG state"
    for i, rng in enumerate(state["rng"]):
        problem = _rng_problem(rng)
        if problem is not None:
            return f"rng[{i}]: {problem}"
    for name, optimizer in state["optimizers"].items():
        problem = _optimizer_problem(optimizer)
        if problem is not None:
            return f"optimizer {name!r}: {problem}"
    return None


def _verify_records(path: Path) -> None:
    """Check each record of the checkpoint's zip archive (the pickle, every tensor's bytes)
    against the CRC-32 that ``torch.save`` stores beside it. ``torch.load`` does not, so
    without this a damaged tensor would load with other numbers.

    Raises:
        zipfile.BadZipFile: not a zip archive, or a record fails its check.
    """
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"record {bad!r} fails its CRC-32 check")


def _corrupt(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {str(path)!r} is corrupt or unreadable ({reason}); "
                           f"delete it to start over")


def _read(path: Path) -> dict[str, Any]:
    """The dict of a checkpoint (or shard) file whose every record passes its CRC-32 check
    and whose format is :data:`FORMAT_VERSION`.

    Raises:
        CheckpointError: unreadable or damaged, or not a gnn_tt checkpoint file.
    """
    try:
        _verify_records(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # damaged zip or pickle data raise errors of many kinds
        raise _corrupt(path, f"{type(err).__name__}: {str(err)[:200]}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a gnn_tt checkpoint of format "
                              f"{FORMAT_VERSION}")
    return state


def _check_config(path: Path, config: TrainConfig, saved: TrainConfig) -> None:
    """Raise a CheckpointError naming the training fields in which ``saved`` (the config of
    the file ``path``) differs from ``config``."""
    differing = config.differing_fields(saved)
    if differing:
        details = ", ".join(f"{k}: checkpoint {saved.training_dict()[k]!r} vs now "
                            f"{config.training_dict()[k]!r}" for k in differing)
        raise CheckpointError(f"checkpoint {str(path)!r} was written by a different config "
                              f"(differing fields: {details}); use another --output or drop "
                              f"--resume")


def _shards_problem(saved: int | None, now: int | None) -> str | None:
    """Why a checkpoint whose table has ``saved`` shards (``None``: not sharded) does not
    resume a job whose table has ``now``; ``None`` when it does."""
    if saved == now:
        return None
    if saved is None:
        return ("holds the whole full table (placement host or device); resume it with "
                "--emb-placement host or device")
    return (f"holds a full table sharded over {saved} ranks (checkpoint.shard*-of-{saved}.pt); "
            f"resume it with --emb-placement sharded under {saved} processes"
            + ("" if now is None else f", not {now}"))


def load_checkpoint(path: str | os.PathLike, config: TrainConfig,
                    row_assignment_hash: str | None,
                    emb_shards: int | None = None) -> dict[str, Any]:
    """Read and verify a checkpoint (without the shards of a sharded table: see
    :func:`load_shard`).

    Args:
        path (str or PathLike): the checkpoint file.
        config (TrainConfig): the config of the job that wants to resume; its training fields
            (all but :data:`gnn_tt.training.config.RUNTIME_FIELDS`) must equal the checkpoint's.
        row_assignment_hash (str, optional): hash of this job's ``row_of_node`` (None for
            inputs without one); must equal the checkpoint's.
        emb_shards (int, optional): the shards of this job's full table when it is sharded
            (its world size), else ``None``; must equal the checkpoint's (default: ``None``).

    Returns:
        dict: ``config``, ``row_assignment_hash``, ``run``, ``epoch`` (epochs completed in
        ``run``), ``model``, ``optimizers``, ``rng`` (one state per rank), ``run_state``
        (:meth:`RunState.to_dict`; empty at the start of a run), ``finished_runs``
        (:meth:`RunResult.to_dict` of each), ``history`` (:meth:`EpochRecord.to_dict` of
        each) and ``elapsed_seconds`` (wall seconds of the job so far, over all its processes;
        absent from checkpoints written before it was stored), ``emb_shards`` (when
        present), as written by :meth:`Checkpointer.save`.

    Raises:
        CheckpointError: unreadable or corrupt file (naming the path): damaged bytes (every
            record is checked against its CRC-32) or contents that are not what
            :meth:`Checkpointer.save` writes; a different config (naming the differing
            fields); a different row assignment; fewer ranks' RNG states than this job has
            ranks; a table sharded otherwise (or not sharded) than ``emb_shards`` says.
    """
    path = Path(path)
    state = _read(path)
    problem = _structure_problem(state)
    if problem is not None:
        raise _corrupt(path, problem)
    _check_config(path, config, TrainConfig.from_dict(state["config"]))
    if state["row_assignment_hash"] != row_assignment_hash:
        raise CheckpointError(f"checkpoint {str(path)!r} was written for a different row "
                              f"assignment (hash {state['row_assignment_hash']} vs now "
                              f"{row_assignment_hash}): the partition changed")
    if len(state["rng"]) < dist.world_size():
        raise CheckpointError(f"checkpoint {str(path)!r} holds the RNG states of "
                              f"{len(state['rng'])} ranks but this job has "
                              f"{dist.world_size()}; resume with at most {len(state['rng'])} "
                              f"processes")
    problem = _shards_problem(state.get("emb_shards"), emb_shards)
    if problem is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} {problem}")
    return state


def load_shard(path: str | os.PathLike, config: TrainConfig, rank: int,
               world_size: int) -> dict[str, Any]:
    """Read and verify the shard file of rank ``rank`` of a table sharded over ``world_size``
    ranks (see :func:`shard_path`).

    Returns:
        dict: ``config``, ``run``, ``epoch`` (the position of the checkpoint it belongs to),
        ``table`` (:meth:`ShardedNodeEmbedding.shard_state_dict` with the shard's optimizer
        state) and ``best`` (the shard of the best epoch's model, kept for layer-wise
        inference, else ``None``).

    Raises:
        CheckpointError: unreadable or corrupt file (naming the path), a different config, or
            the shard of another rank or world size.
    """
    path = Path(path)
    state = _read(path)
    for key, hint in _SHARD_KEYS.items():
        if key not in state:
            raise _corrupt(path, f"no {key!r}")
        if not _conforms(state[key], hint):
            raise _corrupt(path, f"{key!r} is not of type {str(hint).replace('typing.', '')}")
    try:
        saved = TrainConfig.from_dict(state["config"])
    except (TypeError, ValueError) as err:
        raise _corrupt(path, f"config: {err}") from err
    _check_config(path, config, saved)
    for key in ("table", "best"):
        shard = state[key]
        if shard is None:
            continue
        if not isinstance(shard.get("weight"), Tensor):
            raise _corrupt(path, f"{key!r} holds no weight tensor")
        if (shard.get("rank"), shard.get("world_size")) != (rank, world_size):
            raise CheckpointError(f"checkpoint shard {str(path)!r} holds the rows of rank "
                                  f"{shard.get('rank')} of {shard.get('world_size')}, not of "
                                  f"rank {rank} of {world_size}")
    optimizer = state["table"].get("optimizer")
    problem = None if optimizer is None else "not a dict" \
        if not isinstance(optimizer, dict) else _optimizer_problem(optimizer)
    if problem is not None:
        raise _corrupt(path, f"its optimizer: {problem}")
    return state


class Checkpointer:
    r"""The job's checkpoint: saved after every epoch with ``metrics.jsonl`` (the same
    history, one JSON line per epoch), and found again when the job resumes.

    A model with a table sharded over the ranks is saved shard by shard: every rank writes
    its rows and their optimizer state (:func:`shard_path`), then rank 0 the rest; the
    checkpoint's ``optimizers`` leave out the shard's, whose state differs per rank.

    Args:
        output (str or PathLike): the output directory.
        config (TrainConfig): the job's config, stored in the checkpoint and compared with a
            checkpoint's on resume.
        row_assignment_hash (str, optional): hash of the job's ``row_of_node`` (``None`` for
            inputs without one).
        emb_shards (int, optional): the number of shards of the job's full table when it is
            sharded, else ``None``; a checkpoint resumes only under the same
            (default: ``None``).
    """

    def __init__(self, output: str | os.PathLike, config: TrainConfig,
                 row_assignment_hash: str | None, emb_shards: int | None = None) -> None:
        self.output = Path(output)
        self.path = self.output / CHECKPOINT_NAME
        self.metrics_path = self.output / "metrics.jsonl"
        self.config, self.row_assignment_hash = config, row_assignment_hash
        self.emb_shards = emb_shards

    def restore(self) -> dict[str, Any] | None:
        """The checkpoint to continue from (see :func:`load_checkpoint`) when resuming
        (:func:`resuming`) and one exists; else ``None``. With a sharded table it also holds
        this rank's shard, ``shard`` (see :func:`load_shard`); then it is collective, and every
        rank raises when one rank's shard is missing or unusable."""
        if not resuming(self.config) or not self.path.exists():
            return None
        state = load_checkpoint(self.path, self.config, self.row_assignment_hash,
                                self.emb_shards)
        if self.emb_shards is not None:
            state["shard"] = self._restore_shard(state["run"], state["epoch"])
        return state

    def _restore_shard(self, run: int, epoch: int) -> dict[str, Any]:
        """This rank's shard of the checkpoint of (``run``, ``epoch``): the current file, or
        the previous one when a save stopped before ``checkpoint.pt`` was replaced (that one
        then becomes the current file). Collective."""
        rank, current = dist.rank(), shard_path(self.output, dist.rank(), self.emb_shards)
        found, problems = None, []
        for path in (current, shard_path(self.output, rank, self.emb_shards, previous=True)):
            if not path.exists():
                continue
            try:
                shard = load_shard(path, self.config, rank, self.emb_shards)
            except CheckpointError as err:
                problems.append(str(err))
                continue
            if (shard["run"], shard["epoch"]) == (run, epoch):
                found = path, shard
                break
            problems.append(f"{str(path)!r} is of run {shard['run']} epoch {shard['epoch']}")
        problem = None if found else f"rank {rank}: " + ("; ".join(problems) or
                                                          f"no file {str(current)!r}")
        everyone = [problem]
        if dist.world_size() > 1:
            everyone = [None] * dist.world_size()
            torch.distributed.all_gather_object(everyone, problem)
        everyone = [p for p in everyone if p is not None]
        if everyone:
            raise CheckpointError(f"checkpoint {str(self.path)!r} (run {run}, epoch {epoch}) "
                                  f"lacks a usable shard of its table: {'; '.join(everyone)}; "
                                  f"delete it and its shards to start over")
        path, shard = found
        if path != current:
            os.replace(path, current)
        return shard

    def load_model(self, resume: dict[str, Any], model: torch.nn.Module,
                   optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Load the model and optimizer states of ``resume`` (from :meth:`restore`), this
        rank's shard of a sharded table included.

        Raises:
            CheckpointError: the states fit no model of this config (shapes
                :func:`load_checkpoint` cannot see).
        """
        table = sharded_table(model)
        shard_optimizer = None if table is None else _shard_optimizer(table, optimizers)
        try:
            model.load_state_dict(resume["model"])
            for k, o in optimizers.items():
                if k != shard_optimizer:
                    o.load_state_dict(resume["optimizers"][k])
            if table is not None:
                table.load_shard_state_dict(resume["shard"]["table"],
                                            optimizers.get(shard_optimizer))
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"checkpoint {str(self.path)!r} is corrupt or unreadable "
                                  f"({type(err).__name__}: {str(err)[:200]}); delete it or "
                                  f"use --overwrite") from err

    def save(self, run: int, epoch: int, model: torch.nn.Module,
             optimizers: dict[str, torch.optim.Optimizer], run_state: RunState | None,
             finished: Sequence[RunResult], history: Sequence[EpochRecord],
             elapsed_seconds: float, best_shard: dict[str, Any] | None = None) -> None:
        r"""Gather every rank's RNG states; every rank writes its shard of a sharded table;
        rank 0 writes the checkpoint and ``metrics.jsonl``. Collective: every rank calls it.

        Args:
            run (int): the run to continue with.
            epoch (int): epochs of ``run`` completed.
            model (torch.nn.Module): the model (not its DDP wrapper).
            optimizers (dict): the run's optimizers by name.
            run_state (RunState, optional): progress of ``run``; ``None`` at a run's start
                (stored as an empty dict).
            finished (list of RunResult): the runs finished so far.
            history (list of EpochRecord): every epoch trained so far.
            elapsed_seconds (float): wall seconds of the job so far, over all its processes.
            best_shard (dict, optional): with a sharded table and layer-wise inference, this
                rank's shard of the best epoch's model
                (:meth:`ShardedNodeEmbedding.shard_state_dict`), the part of
                ``run_state.best_model`` that is not in it. (default: ``None``)
        """
        rngs = [rng_state()]
        if dist.world_size() > 1:
            rngs = [None] * dist.world_size()
            torch.distributed.all_gather_object(rngs, rng_state())
        table = sharded_table(model)
        shard_optimizer = None if table is None else _shard_optimizer(table, optimizers)
        if table is not None:
            current = shard_path(self.output, table.rank, table.world_size)
            if current.exists():  # kept until checkpoint.pt has moved past it
                os.replace(current, shard_path(self.output, table.rank, table.world_size,
                                               previous=True))
            atomic_torch_save({"format": FORMAT_VERSION, "config": self.config.to_dict(),
                               "run": run, "epoch": epoch,
                               "table": table.shard_state_dict(optimizers.get(shard_optimizer)),
                               "best": best_shard}, current)
            dist.barrier()  # every shard is on disk before the checkpoint that names them
        if dist.is_main():
            save_checkpoint(self.path, {
                "config": self.config.to_dict(), "row_assignment_hash": self.row_assignment_hash,
                "run": run, "epoch": epoch, "model": model.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()
                               if k != shard_optimizer},
                "rng": rngs, "run_state": {} if run_state is None else run_state.to_dict(),
                "finished_runs": [r.to_dict() for r in finished],
                "history": [r.to_dict() for r in history],
                "elapsed_seconds": elapsed_seconds,
                "emb_shards": None if table is None else table.world_size})
            atomic_write_text(self.metrics_path, "".join(
                json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in history))
        dist.barrier()  # the checkpoint is on disk before any rank moves on (or dies)
        if table is not None:
            shard_path(self.output, table.rank, table.world_size, previous=True).unlink(
                missing_ok=True)
