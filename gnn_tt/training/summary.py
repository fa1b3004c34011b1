"""The result of a training job, ``summary.json``: each run's result, their mean ± std, and
the sizes and costs of the model.

Training writes ``summary.json`` from :meth:`TrainSummary.to_dict`;
:mod:`gnn_tt.experiments.report` reads it back with :meth:`TrainSummary.from_dict`.
"""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from gnn_tt.common.table import format_table


def _checked(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls``; a ValueError names the keys
    that are not fields of ``cls`` and the fields without default that are missing."""
    fields = dataclasses.fields(cls)
    unknown = sorted(set(data) - {f.name for f in fields})
    missing = [f.name for f in fields if f.name not in data
               and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if unknown or missing:
        raise ValueError(f"'{cls.__name__}': unknown keys {unknown}, missing required keys "
                         f"{missing}")
    return dict(data)


@dataclass
class AccuracyStats:
    r"""One accuracy over the runs.

    Args:
        mean (float): mean over the runs.
        std (float): sample standard deviation over the runs (``0.0`` for one run), as OGB's
            logger reports it.
        runs (list of float): the accuracy of each run.
    """

    mean: float
    std: float
    runs: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> AccuracyStats:
        """Mean and sample standard deviation of one or more ``values``."""
        return cls(statistics.fmean(values),
                   statistics.stdev(values) if len(values) > 1 else 0.0, list(values))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "runs": list(self.runs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccuracyStats:
        """Inverse of :meth:`to_dict`."""
        return cls(**_checked(cls, data))


@dataclass
class RunResult:
    r"""One finished run (seed): the accuracies of its best validation epoch.

    Args:
        run (int): the run, from 0.
        seed (int): its seed, ``config.seed + run``.
        val_acc (float): best validation accuracy; with layer-wise inference, the full-graph
            accuracy of the best epoch's model.
        test_acc (float): test accuracy of the best validation epoch (full-graph with
            layer-wise inference).
        best_epoch (int): the best validation epoch.
        epoch_seconds (float): mean wall seconds of the run's epochs.
        sampled_val_acc (float, optional): with layer-wise inference, the sampled-neighbourhood
            validation accuracy of the best epoch; ``None`` without. (default: ``None``)
        sampled_test_acc (float, optional): likewise for the test accuracy.
            (default: ``None``)
    """

    run: int
    seed: int
    val_acc: float
    test_acc: float
    best_epoch: int
    epoch_seconds: float
    sampled_val_acc: float | None = None
    sampled_test_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as a plain dict; without layer-wise inference it has no ``sampled_*``
        keys."""
        data = dataclasses.asdict(self)
        if self.sampled_val_acc is None:
            del data["sampled_val_acc"], data["sampled_test_acc"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**_checked(cls, data))


@dataclass
class TrainSummary:
    r"""The result of a training job, the content of ``summary.json``.

    The fields a report reads come first and are required; the others default to ``None``
    (or empty), so a summary holding only what a report reads also loads.

    Args:
        test_acc (AccuracyStats): test accuracy over the runs.
        val_acc (AccuracyStats): validation accuracy over the runs.
        embedding_parameters (int): parameters of the node input (TT cores or full table).
        compression_ratio (float, optional): ``full_table_parameters /
            embedding_parameters``; ``None`` for an input without parameters (features).
        epoch_seconds (float): mean wall seconds of an epoch's training pass over all runs,
            without its evaluation (``0.0`` when no epoch was trained by this job).
        dataset (str, optional): the dataset's name.
        model (str, optional): ``gat`` or ``sage``.
        emb (str, optional): the node input: ``tt``, ``full`` or ``features``.
        runs (list of RunResult, optional): each run's result. (default: ``[]``)
        full_table_parameters (int, optional): parameters of a full ``[N, D]`` table.
        gnn_parameters (int, optional): parameters of the GNN.
        parameters (dict, optional): parameters of each part of the model present, by name:
            ``tt_cores``, ``full_table``, ``feature_projection`` (a ``+features`` input's
            projection, trained with the GNN) and ``gnn``. (default: ``{}``)
        tt_p_shapes (tuple of int, optional): row factors of the TT input (``None`` for the
            other inputs).
        tt_q_shapes (tuple of int, optional): column factors of the TT input.
        partition_stats (dict, optional): statistics of the row layout. (default: ``{}``)
        row_assignment_hash (str, optional): digest of the TT input's ``row_of_node``.
        peak_memory_bytes (int, optional): peak memory of the device, max over the ranks.
        world_size (int, optional): number of processes.
        device (str, optional): rank 0's device.
        eval_seconds (float, optional): mean wall seconds of an evaluation over the evaluated
            epochs of all runs (``None`` when none was timed).
        total_seconds (float, optional): wall seconds of the job, summed over its processes
            when it was resumed.
        comm_bytes_per_step (float, optional): bytes a rank hands to collectives per training
            step (DDP's all-reduce and broadcast, the full table's gradient all-gather or
            all-to-alls), mean over the ranks, steps and epochs; ``0.0`` in one process
            (see :mod:`gnn_tt.common.comm`).
        comm_bytes_by_kind (dict, optional): ``comm_bytes_per_step`` by kind.
            (default: ``{}``)
        comm_wire_bytes_per_step (float, optional): the bytes a rank sends over its links per
            step for those inputs, estimated for ring and pairwise algorithms
            (:func:`~gnn_tt.common.comm.wire_bytes`).
        dataset_summary (dict, optional): sizes and label statistics of the dataset.
            (default: ``{}``)
        output (str, optional): the output directory.
        emb_placement (str, optional): where the full table lived, ``host``, ``device`` or
            ``sharded`` (``None`` for an input without a full table).
        emb_placement_reason (str, optional): why that placement (``requested``, or the rule
            of ``auto``; see :func:`gnn_tt.embedding.placement.choose_placement`).
    """

    test_acc: AccuracyStats
    val_acc: AccuracyStats
    embedding_parameters: int
    compression_ratio: float | None
    epoch_seconds: float
    dataset: str | None = None
    model: str | None = None
    emb: str | None = None
    runs: list[RunResult] = field(default_factory=list)
    full_table_parameters: int | None = None
    gnn_parameters: int | None = None
    parameters: dict[str, int] = field(default_factory=dict)
    tt_p_shapes: tuple[int, ...] | None = None
    tt_q_shapes: tuple[int, ...] | None = None
    partition_stats: dict[str, Any] = field(default_factory=dict)
    row_assignment_hash: str | None = None
    peak_memory_bytes: int | None = None
    world_size: int | None = None
    device: str | None = None
    eval_seconds: float | None = None
    total_seconds: float | None = None
    comm_bytes_per_step: float | None = None
    comm_bytes_by_kind: dict[str, float] = field(default_factory=dict)
    comm_wire_bytes_per_step: float | None = None
    dataset_summary: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    emb_placement: str | None = None
    emb_placement_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values (the TT shapes as lists)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(test_acc=self.test_acc.to_dict(), val_acc=self.val_acc.to_dict(),
                    runs=[r.to_dict() for r in self.runs])
        for key in ("tt_p_shapes", "tt_q_shapes"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSummary:
        """Inverse of :meth:`to_dict`: reads a ``summary.json``.

        Raises:
            ValueError: a key that is not a field, or a missing required field.
        """
        values = _checked(cls, data)
        values["test_acc"] = AccuracyStats.from_dict(values["test_acc"])
        values["val_acc"] = AccuracyStats.from_dict(values["val_acc"])
        values["runs"] = [RunResult.from_dict(r) for r in values.get("runs", ())]
        for key in ("tt_p_shapes", "tt_q_shapes"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def format_summary(summary: TrainSummary) -> str:
    """The final table: accuracy, embedding size vs a full table, times (an epoch's training
    pass, an evaluation, the job), output."""
    def pm(s: AccuracyStats) -> str:
        return f"{s.mean:.4f} ± {s.std:.4f}"

    ratio = summary.compression_ratio
    row = {"dataset": summary.dataset, "model": summary.model, "emb": summary.emb,
           "runs": len(summary.runs), "val_acc": pm(summary.val_acc),
           "test_acc": pm(summary.test_acc),
           "emb_params": f"{summary.embedding_parameters:,}",
           "vs_full_table": "-" if ratio is None else f"{ratio:,.1f}x smaller" if ratio > 1
           else "full table",
           "epoch_s": round(summary.epoch_seconds, 2),
           "eval_s": "-" if summary.eval_seconds is None else round(summary.eval_seconds, 2),
           "total_s": round(summary.total_seconds, 1),
           "comm_MB_per_step": "-" if summary.comm_bytes_per_step is None
           else round(summary.comm_bytes_per_step / 1e6, 3)}
    return format_table([row]) + f"\noutput: {summary.output}"
