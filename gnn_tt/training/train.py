"""``gnn-tt train``: mini-batch GAT/GraphSAGE training with TT (or full-table) node embeddings.

One entry point for ``python -m gnn_tt train`` and ``torchrun --nproc-per-node N -m gnn_tt
train``: under torchrun (``RANK`` set) it joins the process group, each rank trains on its
share of the training seeds, DDP all-reduces the GNN and TT-core gradients (a full table syncs
its sparse gradient itself, or, sharded, sends it to the rows' owners), rank 0 alone prints,
logs and writes files. Where a full table lives (``--emb-placement``) is decided once, alike on
every rank, before anything is written (:func:`place_table`).

Output directory: ``config.json``, ``metrics.jsonl`` (one JSON object per epoch),
``summary.json`` and ``checkpoint.pt`` (rewritten atomically after every epoch). A non-empty
output directory is refused unless the job resumes it (``--resume``, or a torchrun restart) or
replaces it (``--overwrite``); nothing in it changes before the checkpoint to resume from has
passed its checks.

The loop itself has no test or benchmark hooks: callers register epoch-end callbacks
(:mod:`gnn_tt.training.callbacks`), and :func:`main` installs those the environment asks for.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from gnn_tt.common import distributed as dist
from gnn_tt.common.comm import wire_bytes
from gnn_tt.common.io import atomic_write_json, tensor_digest
from gnn_tt.common.memory import peak_memory_bytes
from gnn_tt.common.precision import autocast
from gnn_tt.data import CSRGraph, GraphDataset, load_dataset
from gnn_tt.embedding import build_node_input
from gnn_tt.embedding.node_input import kind_parts
from gnn_tt.embedding.placement import FreeMemory, choose_placement
from gnn_tt.embedding.tt_shapes import PARTITION_ROWS, choose_tt_shapes
from gnn_tt.models import GAT, GraphSAGE, NodeClassifier, wrap_ddp
from gnn_tt.sampling import NeighborLoader
from gnn_tt.training.callbacks import Callback, env_callbacks
from gnn_tt.training.checkpoint import (CheckpointError, Checkpointer, check_output,
                                        clear_output, set_rng_state, sharded_table)
from gnn_tt.training.config import TrainConfig, parse_config
from gnn_tt.training.epoch import RunParts, slowest_rank_seconds, train_epoch
from gnn_tt.training.evaluate import evaluate_full, evaluate_sampled
from gnn_tt.training.run_state import EpochRecord, RunState, mean_comm_bytes
from gnn_tt.training.summary import AccuracyStats, RunResult, TrainSummary, format_summary
from partition import assign_rows


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``.

    Raises:
        RuntimeError: a CUDA device is asked for but CUDA is not available, or its index is
            not among the visible devices.
    """
    if name == "auto":
        name = f"cuda:{dist.local_rank()}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{dist.local_rank()}"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available")
        if device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {name!r} requested but only "
                               f"{torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_device(device)
    return device


def log_stage(message: str) -> None:
    """Print one line of setup progress (a stage and its seconds) to stderr, on rank 0 only."""
    if dist.is_main():
        print(message, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Layout:
    """The node -> TT-row map of an input with a TT part (None for the other inputs)."""

    row_of_node: Tensor | None
    tt_p_shapes: tuple[int, ...] | None
    tt_q_shapes: tuple[int, ...] | None
    stats: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None  # of row_of_node, stored in checkpoints


def tt_shapes(config: TrainConfig, num_nodes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Row and column factors: the config's, else those chosen for a partition-laid-out table
    (:data:`~gnn_tt.embedding.tt_shapes.PARTITION_ROWS`)."""
    p, q = choose_tt_shapes(num_nodes, config.emb_dim, PARTITION_ROWS,
                            p_shapes=config.tt_p_shapes, q_shapes=config.tt_q_shapes)
    if math.prod(p) < num_nodes:
        raise ValueError(f"tt_p_shapes {p} give {math.prod(p)} rows < {num_nodes} nodes")
    return p, q


def build_layout(config: TrainConfig, dataset: GraphDataset, device: torch.device) -> Layout:
    """Row assignment of an input with a TT part (``tt``, ``tt+features``): computed (or read
    from the cache) on rank 0 and broadcast, so every replica looks up the same rows."""
    if "tt" not in kind_parts(config.emb):
        return Layout(None, None, None)
    p, q = tt_shapes(config, dataset.num_nodes)
    rows = torch.empty(dataset.num_nodes, dtype=torch.long)
    stats: Any = None
    if dist.is_main():
        t0 = time.perf_counter()
        ra = assign_rows(dataset.graph, dataset.num_nodes, p, method=config.partition,
                         num_parts=config.num_parts, seed=config.seed,
                         cache_dir=config.cache_dir, labels=dataset.y,
                         progress=sys.stderr.isatty())
        rows, stats = ra.row_of_node.long(), ra.stats
        log_stage(f"partition: {config.partition} {p} in {time.perf_counter() - t0:.1f} s"
                  + (" (from the cache)" if stats.get("cache_hit") else ""))
    if dist.world_size() > 1:
        # NCCL broadcasts device tensors only; gloo host tensors.
        rows = dist.broadcast_(rows.to(device)).cpu()
        stats = dist.broadcast_object(stats)
    return Layout(rows, p, q, dict(stats or {}), tensor_digest(rows))


@dataclass(frozen=True)
class TablePlacement:
    r"""Where the full table of a ``full`` / ``full+features`` input lives.

    Args:
        name (str, optional): ``host``, ``device`` or ``sharded``; ``None`` for an input
            without a full table.
        reason (str, optional): why (see
            :func:`~gnn_tt.embedding.placement.choose_placement`).
        process_group (ProcessGroup, optional): a ``sharded`` table's own group of all ranks,
            so that its all-to-alls never interleave with DDP's collectives; else ``None``.
    """

    name: str | None = None
    reason: str | None = None
    process_group: torch.distributed.ProcessGroup | None = None

    @property
    def shards(self) -> int | None:
        """The number of shards of a sharded table (the world size), else ``None``."""
        return dist.world_size() if self.name == "sharded" else None


def place_table(config: TrainConfig, num_nodes: int, device: torch.device) -> TablePlacement:
    """Resolve ``config.emb_placement`` for a ``num_nodes``-row table (nothing for an input
    without a full table): every rank measures its free memory, the least over the ranks
    decides, so every rank chooses alike; rank 0 prints the choice. Collective under torchrun
    (it also creates a sharded table's process group on every rank).

    Raises:
        ValueError: the placement cannot hold the table (the bytes it needs and the bytes
            available), on every rank alike.
    """
    if "full" not in kind_parts(config.emb):
        return TablePlacement()
    memory = FreeMemory.measure(device, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if dist.world_size() > 1:
        # max of the negated values = the least over the ranks; float64 is exact below 2**53.
        low = torch.tensor([-memory.device_bytes, -memory.host_bytes], dtype=torch.float64)
        device_bytes, host_bytes = (-dist.all_reduce_max(low.to(device))).tolist()
        memory = dataclasses.replace(memory, device_bytes=int(device_bytes),
                                     host_bytes=int(host_bytes))
    name, reason = choose_placement(config.emb_placement, num_nodes, config.emb_dim,
                                    dist.world_size(), memory)
    log_stage(f"emb placement: {name} ({reason})")
    sharded = name == "sharded" and dist.world_size() > 1
    return TablePlacement(name, reason, torch.distributed.new_group() if sharded else None)


def build_model(config: TrainConfig, dataset: GraphDataset, layout: Layout,
                device: torch.device, seed: int,
                placement: TablePlacement = TablePlacement("host")) -> NodeClassifier:
    """Input layer + GNN, initialized from the torch RNG and ``seed`` (the same on every
    rank, so the replicas start identical); a full table placed as ``placement`` says
    (:func:`place_table`; default: host) starts from the same values and leaves the same GNN
    under every placement."""
    node_input = build_node_input(
        config.emb, num_nodes=dataset.num_nodes, embedding_dim=config.emb_dim,
        row_of_node=layout.row_of_node, tt_ranks=config.tt_rank,
        tt_p_shapes=layout.tt_p_shapes, tt_q_shapes=layout.tt_q_shapes, tt_init=config.tt_init,
        x=dataset.x, feature_proj=config.feature_proj, device=device, seed=seed,
        placement=placement.name or "host", process_group=placement.process_group)
    if config.model == "gat":
        gnn = GAT(node_input.embedding_dim, config.hidden, dataset.num_classes,
                  num_layers=config.num_layers, heads=config.heads, dropout=config.dropout,
                  residual=config.residual, norm=config.norm)
    else:
        gnn = GraphSAGE(node_input.embedding_dim, config.hidden, dataset.num_classes,
                        num_layers=config.num_layers, dropout=config.dropout)
    # A host table stays on the host whatever .to() asks (FullNodeEmbedding).
    return NodeClassifier(node_input, gnn).to(device)


def distribute(model: NodeClassifier, device: torch.device) -> torch.nn.Module:
    """DDP over the GNN and the TT cores (the full table and the per-node buffers stay out,
    see ``models.wrap_ddp``); the model itself in a single process."""
    if dist.world_size() == 1:
        return model
    return wrap_ddp(model, device_ids=[device] if device.type == "cuda" else None)


def sync_buffers(model: NodeClassifier) -> None:
    """Copy rank 0's floating buffers to every rank. DDP broadcasts them before each forward,
    but each rank then updates its batch-norm running statistics from its own batch: after
    the last step of an epoch they differ, and the replicas must evaluate and checkpoint
    identically.
    Per-node data buffers (features, row_of_node) are identical by construction: skipped."""
    ignored = set(model.ddp_ignored_names())
    for name, buf in model.named_buffers():
        if buf.is_floating_point() and name not in ignored:
            dist.broadcast_(buf)


def make_optimizers(config: TrainConfig, model: NodeClassifier) -> dict[str, torch.optim.Optimizer]:
    """Separate optimizers: Adam for the GNN; Adam (TT cores) or SparseAdam (full table) for
    the embedding, with its own learning rate."""
    optimizers = {"gnn": torch.optim.Adam(model.gnn_parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)}
    emb_opt = model.node_input.embedding_optimizer(config.emb_lr)
    if emb_opt is not None:
        optimizers["emb"] = emb_opt
    return optimizers


@dataclass
class TrainData:
    r"""The job's data, where training reads it.

    Args:
        dataset (GraphDataset): the dataset, on the host.
        layout (Layout): the TT row layout (empty for the other inputs).
        graph (CSRGraph): the graph the samplers read. The sampler runs where the graph lives:
            on the GPU when training on one, else on the host.
        y (Tensor): int64 labels of every node, on the training device.
        splits (dict): ``val`` and ``test`` node ids, on the host.
        pin_memory (bool): pin batches sampled on the host for a GPU, so their copies overlap
            with compute.

    Shapes:
        - y: [N]
    """

    dataset: GraphDataset
    layout: Layout
    graph: CSRGraph
    y: Tensor
    splits: dict[str, Tensor]
    pin_memory: bool

    @classmethod
    def load(cls, config: TrainConfig, device: torch.device) -> TrainData:
        """Load ``config.dataset`` and build its layout (collective under torchrun, see
        :func:`build_layout`).

        Raises:
            ValueError: ``config.batch_size`` exceeds the training split, or ``config.emb``
                reads node features the dataset does not have (raised before anything is
                written).
        """
        t0 = time.perf_counter()
        dataset = load_dataset(config.dataset, config.root)
        log_stage(f"data: loaded {config.dataset} ({dataset.num_nodes:,} nodes, "
                  f"{dataset.graph.num_edges // 2:,} edges) in {time.perf_counter() - t0:.1f} s")
        if "features" in kind_parts(config.emb) and dataset.x is None:
            raise ValueError(f"dataset {config.dataset!r} has no node features; --emb "
                             f"{config.emb} needs them (ogbn-* and npz files with 'x' have "
                             f"them)")
        ntrain = dataset.train_idx.numel()
        if config.batch_size > ntrain:
            raise ValueError(f"batch_size={config.batch_size} is larger than the training split "
                             f"of {dataset.name} ({ntrain} nodes)")
        layout = build_layout(config, dataset, device)
        graph = dataset.graph
        if device.type == "cuda":
            t0 = time.perf_counter()
            graph = graph.to(device)
            log_stage(f"graph: moved to {device} in {time.perf_counter() - t0:.1f} s")
        return cls(dataset, layout, graph, dataset.y.to(device),
                   {"val": dataset.valid_idx, "test": dataset.test_idx},
                   pin_memory=graph.device.type == "cpu" and device.type == "cuda")


class Trainer:
    r"""One training job: :meth:`fit` trains ``config.runs`` runs (seeds) and writes the
    output directory; rank 0 alone prints and writes files. Constructing it refuses a
    non-empty output directory the job neither resumes nor overwrites
    (:func:`~gnn_tt.training.checkpoint.check_output`), before the data is loaded, and a
    full-table placement that cannot hold the table (:func:`place_table`), before anything is
    written.

    Args:
        config (TrainConfig): the job.
        device (torch.device): this rank's device.
        callbacks (list of Callback, optional): called on every rank after each epoch, once
            its checkpoint is on disk. (default: none)
    """

    def __init__(self, config: TrainConfig, device: torch.device,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.t0 = time.perf_counter()
        self.earlier_seconds = 0.0  # wall seconds of the job's earlier processes (resumed)
        check_output(config)
        self.config, self.device = config, device
        self.callbacks = list(callbacks)
        self.out = Path(config.output)
        self.progress = dist.is_main() and sys.stderr.isatty()
        self.data = TrainData.load(config, device)
        self.placement = place_table(config, self.data.dataset.num_nodes, device)
        self.checkpoints = Checkpointer(self.out, config, self.data.layout.digest,
                                        self.placement.shards)
        self.history: list[EpochRecord] = []
        self.finished: list[RunResult] = []
        self.model: NodeClassifier | None = None  # the last run's, which the summary counts
        # With a sharded table and layer-wise inference: this rank's shard of the run's best
        # model (shard_state_dict), the part of RunState.best_model that is not in it.
        self.best_shard: dict[str, Any] | None = None

    # --- one run -----------------------------------------------------------------------------

    def setup_run(self, run: int) -> RunParts:
        """Model, DDP wrapper, optimizers and train loader of run ``run``, seeded with
        ``seed + run`` (the same on every rank), then the global RNG reseeded with
        ``seed + run + rank`` (dropout differs per rank)."""
        cfg, device, data = self.config, self.device, self.data
        run_seed = cfg.seed + run
        seed_everything(run_seed)
        model = build_model(cfg, data.dataset, data.layout, device, run_seed, self.placement)
        self.best_shard = None
        parts = RunParts(model, distribute(model, device), make_optimizers(cfg, model),
                         NeighborLoader(data.graph, data.dataset.train_idx, cfg.fanouts,
                                        cfg.batch_size, shuffle=True, rank=dist.rank(),
                                        world_size=dist.world_size(), seed=run_seed,
                                        drop_last=False, prefetch=1,
                                        pin_memory=data.pin_memory))
        seed_everything(run_seed + dist.rank())
        return parts

    def fit_run(self, run: int, resume: dict[str, Any] | None) -> RunResult:
        """Train run ``run`` (continuing from the checkpoint ``resume`` when it stopped inside
        this run) and return its result."""
        parts = self.setup_run(run)
        state, start = RunState(), 0
        if resume is not None and resume["run"] == run and resume["epoch"] > 0:
            self.checkpoints.load_model(resume, parts.model, parts.optimizers)
            self.best_shard = resume["shard"]["best"] if "shard" in resume else None
            set_rng_state(resume["rng"][dist.rank()])
            state, start = RunState.from_dict(resume["run_state"]), resume["epoch"]
        for epoch in range(start, self.config.epochs):
            record = self.fit_epoch(parts, run, epoch, state)
            self.checkpoints.save(run, epoch + 1, parts.model, parts.optimizers, state,
                                  self.finished, self.history, self.elapsed(), self.best_shard)
            for callback in self.callbacks:
                callback.on_epoch_end(record)
        result = self.run_result(run, parts.model, state)
        self.finished.append(result)
        self.model = parts.model
        self.checkpoints.save(run + 1, 0, parts.model, parts.optimizers, None, self.finished,
                              self.history, self.elapsed())
        return result

    def fit_epoch(self, parts: RunParts, run: int, epoch: int, state: RunState) -> EpochRecord:
        """Train epoch ``epoch`` of run ``run``, evaluate it when due, and record it in
        ``state`` and the history.

        Raises:
            FloatingPointError: the loss is not finite; the checkpoint of the previous epoch
                stays.
        """
        cfg, data = self.config, self.data
        stats = train_epoch(parts, data.y, epoch, self.device, cfg.amp,
                            desc=f"run {run} epoch {epoch}", progress=self.progress)
        loss, seconds = stats.loss, stats.seconds
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss} in run {run} epoch {epoch}; stopping. The last good "
                f"checkpoint ({self.checkpoints.path}, after epoch {epoch - 1}) is kept")
        sync_buffers(parts.model)
        state.epoch_seconds.append(seconds)
        record = EpochRecord(run, epoch, loss, seconds,
                             comm_bytes_per_step=stats.comm_bytes_per_step)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            t0 = time.perf_counter()
            acc = evaluate_sampled(parts.model, data.graph, data.y, data.splits, cfg.eval_fanouts,
                                   cfg.eval_batch_size, self.device, cfg.amp, seed=cfg.seed + run,
                                   ogb_name=data.dataset.ogb_name, pin_memory=data.pin_memory)
            record.eval_seconds = slowest_rank_seconds(t0, self.device)
            record.val_acc, record.test_acc = acc["val"], acc["test"]
            if state.improve(epoch, acc["val"], acc["test"]) and cfg.layerwise_inference:
                state.best_model = copy.deepcopy(parts.model.state_dict())
                table = sharded_table(parts.model)  # its rows are not in the state_dict
                if table is not None:
                    self.best_shard = table.shard_state_dict()
        self.history.append(record)
        if dist.is_main():
            tqdm.write(record.line())
        return record

    def run_result(self, run: int, model: NodeClassifier, state: RunState) -> RunResult:
        """The result of a run: its best validation epoch's accuracies, with layer-wise
        inference those of the best model on the full graph."""
        result = RunResult(run, self.config.seed + run, state.best_val, state.best_test,
                           state.best_epoch, statistics.fmean(state.epoch_seconds))
        if not self.config.layerwise_inference:
            return result
        model.load_state_dict(state.best_model)
        if self.best_shard is not None:
            sharded_table(model).load_shard_state_dict(self.best_shard)
        # Every rank infers every node in the same batches, so that the lookups of a sharded
        # table, which are collective, stay in step.
        acc = evaluate_full(lambda: self.predict_all(model), self.data.dataset.y,
                            self.data.splits, self.data.dataset.ogb_name)
        return dataclasses.replace(result, val_acc=acc["val"], test_acc=acc["test"],
                                   sampled_val_acc=state.best_val,
                                   sampled_test_acc=state.best_test)

    @torch.no_grad()
    def predict_all(self, model: NodeClassifier) -> Tensor:
        """Logits of every node by layer-wise full-neighbour inference, [N, C] on the host."""
        with autocast(self.device, self.config.amp):
            return model.inference(self.data.graph, self.config.eval_batch_size, self.device,
                                   progress=self.progress).float()

    # --- the job -----------------------------------------------------------------------------

    def summary(self, seconds: float) -> TrainSummary:
        """The job's summary after ``seconds`` of wall time (over all its processes);
        collective (the peak memory is the max over the ranks)."""
        model, cfg, data = self.model, self.config, self.data
        counts = model.parameter_counts()
        # The learnable per-node table alone (TT cores or full table, every shard of it),
        # compared with a full table of the same emb_dim; a feature projection is counted apart.
        emb_params = sum(n for part, n in model.node_input.parameter_counts().items()
                         if part != "feature_projection")
        full_params = data.dataset.num_nodes * cfg.emb_dim
        peak = torch.tensor([float(peak_memory_bytes(self.device))], dtype=torch.float64)
        peak = int(dist.all_reduce_max(peak.to(self.device)))
        epoch_seconds = [r.epoch_seconds for r in self.history]
        eval_seconds = [r.eval_seconds for r in self.history if r.eval_seconds is not None]
        comm = mean_comm_bytes(self.history)
        return TrainSummary(
            test_acc=AccuracyStats.of([r.test_acc for r in self.finished]),
            val_acc=AccuracyStats.of([r.val_acc for r in self.finished]),
            embedding_parameters=emb_params,
            compression_ratio=full_params / emb_params if emb_params else None,
            epoch_seconds=statistics.fmean(epoch_seconds) if epoch_seconds else 0.0,
            dataset=data.dataset.name, model=cfg.model, emb=cfg.emb, runs=list(self.finished),
            full_table_parameters=full_params,
            gnn_parameters=counts["gnn"], parameters=counts,
            tt_p_shapes=data.layout.tt_p_shapes, tt_q_shapes=data.layout.tt_q_shapes,
            partition_stats=data.layout.stats, row_assignment_hash=data.layout.digest,
            peak_memory_bytes=peak, world_size=dist.world_size(), device=str(self.device),
            eval_seconds=statistics.fmean(eval_seconds) if eval_seconds else None,
            total_seconds=seconds, comm_bytes_per_step=sum(comm.values()) if comm else None,
            comm_bytes_by_kind=comm, comm_wire_bytes_per_step=sum(
                wire_bytes(k, b, dist.world_size()) for k, b in comm.items()) if comm else None,
            dataset_summary=data.dataset.summary(),
            output=str(self.out), emb_placement=self.placement.name,
            emb_placement_reason=self.placement.reason)

    def elapsed(self) -> float:
        """Wall seconds of the job so far: its earlier processes' (read from the checkpoint
        resumed) and this one's since the trainer was built."""
        return self.earlier_seconds + time.perf_counter() - self.t0

    def fit(self) -> TrainSummary:
        """Train the runs not finished yet (continuing from the checkpoint when resuming),
        write ``config.json`` and ``summary.json``, and return the summary on every rank.

        The checkpoint to resume from is read and verified before anything in the output
        directory changes; an overwriting job then removes the earlier job's files
        (:func:`~gnn_tt.training.checkpoint.clear_output`) before writing its ``config.json``.

        Raises:
            CheckpointError: the checkpoint to resume from is unreadable or belongs to another
                config or row assignment; the output directory is left as it was.
        """
        resume = self.checkpoints.restore()
        if dist.is_main():
            if self.config.overwrite and resume is None:
                clear_output(self.out)
            atomic_write_json(self.out / "config.json", self.config.to_dict())
        first = 0
        if resume is not None:
            self.earlier_seconds = float(resume.get("elapsed_seconds", 0.0))
            self.history = [EpochRecord.from_dict(r) for r in resume["history"]]
            self.finished = [RunResult.from_dict(r) for r in resume["finished_runs"]]
            first = resume["run"]
        if first >= self.config.runs and self.finished:
            # Every run finished before: the summary counts the parameters of a fresh model.
            self.model = build_model(self.config, self.data.dataset, self.data.layout,
                                     self.device, self.config.seed, self.placement)
        for run in range(first, self.config.runs):
            self.fit_run(run, resume)
        summary = self.summary(self.elapsed())
        if dist.is_main():
            atomic_write_json(self.out / "summary.json", summary.to_dict())
        return summary


def run(config: TrainConfig, callbacks: Sequence[Callback] = ()) -> TrainSummary:
    """Train ``config.runs`` runs and write the output directory; returns the summary (on
    every rank). ``callbacks`` are called after each epoch (see :class:`Trainer`).

    Under torchrun it joins (or creates) the default process group; a group created here is
    destroyed at the end, one created by the caller is left alone, so callers (the sweep) may
    call ``run`` repeatedly.
    """
    device = resolve_device(config.device)
    owned = dist.init_from_env(device)
    threads = torch.get_num_threads()
    try:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        return Trainer(config, device, callbacks).fit()
    finally:
        torch.set_num_threads(threads)
        dist.cleanup(owned)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI of ``gnn-tt train``; no arguments runs the embedded default. Exit status 2 for an
    invalid config (a device this machine lacks, an output directory the job may not write),
    1 for a failed run; either with a one-line message. Installs the callbacks the environment
    asks for (:func:`~gnn_tt.training.callbacks.env_callbacks`)."""
    try:
        config = parse_config(argv)
        resolve_device(config.device)  # a missing GPU is found before any data is loaded
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"gnn-tt train: error: {err}", file=sys.stderr)
        return 2
    try:
        summary = run(config, env_callbacks())
    except FileExistsError as err:
        print(f"gnn-tt train: error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, FloatingPointError, ValueError, FileNotFoundError) as err:
        print(f"gnn-tt train: error: {err}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
