"""``gnn-tt train``: mini-batch GAT/GraphSAGE training with TT (or full-table) node embeddings.

One entry point for ``python -m gnn_tt.training.train`` and ``torchrun --nproc-per-node N -m
gnn_tt.training.train``: under torchrun (``RANK`` set) it joins the process group, each rank trains on
its share of the training seeds, DDP all-reduces the GNN and TT-core gradients (the host-resident
full table syncs its sparse gradient itself), rank 0 alone prints, logs and writes files.

Output directory: ``config.json``, ``metrics.jsonl`` (one JSON object per evaluated epoch),
``summary.json`` and ``checkpoint.pt`` (rewritten atomically after every epoch).
"""
from __future__ import annotations

import copy
import json
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
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from gnn_tt.common import distributed as dist
from gnn_tt.training.checkpoint import (CHECKPOINT_NAME, CheckpointError, load_checkpoint, rng_state,
                               save_checkpoint, set_rng_state)
from gnn_tt.training.config import TrainConfig, parse_config
from gnn_tt.data import GraphDataset, load_dataset
from gnn_tt.common.precision import autocast
from gnn_tt.training.evaluate import evaluate_full, evaluate_sampled
from gnn_tt.common.io import atomic_write_json, atomic_write_text, tensor_digest
from gnn_tt.common.memory import peak_memory_bytes
from gnn_tt.common.table import format_table
from gnn_tt.embedding import build_node_input
from gnn_tt.models import GAT, GraphSAGE, NodeClassifier, wrap_ddp
from gnn_tt.sampling import NeighborLoader
from partition import assign_rows

# Test hook: "RANK:EPOCH" makes that rank die (os._exit) right after epoch EPOCH's checkpoint on
# the first attempt (TORCHELASTIC_RESTART_COUNT unset or 0): simulates a killed worker.
FAIL_ENV = "GNN_TT_FAIL_AFTER_EPOCH"
# Slack of the TT row grid over the node count, so the hierarchical layout has room to balance.
ROW_SLACK = 1.05


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        name = f"cuda:{dist.local_rank()}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{dist.local_rank()}"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available")
        torch.cuda.set_device(device)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Layout:
    """The node -> TT-row map of the ``tt`` input (None for the other inputs)."""

    row_of_node: Tensor | None
    tt_p_shapes: tuple[int, ...] | None
    tt_q_shapes: tuple[int, ...] | None
    stats: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None  # of row_of_node, stored in checkpoints


def tt_shapes(config: TrainConfig, num_nodes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Row and column factors: the config's, else balanced ones with ~5% row slack."""
    from gnn_tt.embedding.tt_shapes import suggest_tt_shapes

    d = len(config.tt_p_shapes or config.tt_q_shapes or (0, 0, 0))
    p = config.tt_p_shapes or tuple(suggest_tt_shapes(math.ceil(num_nodes * ROW_SLACK), d))
    q = config.tt_q_shapes or tuple(suggest_tt_shapes(config.emb_dim, d, allow_round_up=False))
    if math.prod(p) < num_nodes:
        raise ValueError(f"tt_p_shapes {p} give {math.prod(p)} rows < {num_nodes} nodes")
    return tuple(p), tuple(q)


def build_layout(config: TrainConfig, dataset: GraphDataset, device: torch.device) -> Layout:
    """Row assignment of the ``tt`` input: computed (or read from the cache) on rank 0 and
    broadcast, so every replica looks up the same rows."""
    if config.emb != "tt":
        return Layout(None, None, None)
    p, q = tt_shapes(config, dataset.num_nodes)
    rows = torch.empty(dataset.num_nodes, dtype=torch.long)
    stats: Any = None
    if dist.is_main():
        ra = assign_rows(dataset.graph, dataset.num_nodes, p, method=config.partition,
                         num_parts=config.num_parts, seed=config.seed,
                         cache_dir=config.cache_dir, labels=dataset.y,
                         progress=sys.stderr.isatty())
        rows, stats = ra.row_of_node.long(), ra.stats
    if dist.world_size() > 1:
        # NCCL broadcasts device tensors only; gloo host tensors.
        rows = dist.broadcast_(rows.to(device)).cpu()
        stats = dist.broadcast_object(stats)
    return Layout(rows, p, q, dict(stats or {}), tensor_digest(rows))


def build_model(config: TrainConfig, dataset: GraphDataset, layout: Layout,
                device: torch.device, seed: int) -> NodeClassifier:
    """Input layer + GNN, initialized from the torch RNG and ``seed`` (the same on every
    rank, so the replicas start identical)."""
    node_input = build_node_input(
        config.emb, num_nodes=dataset.num_nodes, embedding_dim=config.emb_dim,
        row_of_node=layout.row_of_node, tt_ranks=config.tt_rank,
        tt_p_shapes=layout.tt_p_shapes, tt_q_shapes=layout.tt_q_shapes, tt_init=config.tt_init,
        x=dataset.x, device=device, seed=seed)
    if config.model == "gat":
        gnn = GAT(node_input.embedding_dim, config.hidden, dataset.num_classes,
                  num_layers=config.num_layers, heads=config.heads, dropout=config.dropout,
                  residual=config.residual, norm=config.norm)
    else:
        gnn = GraphSAGE(node_input.embedding_dim, config.hidden, dataset.num_classes,
                        num_layers=config.num_layers, dropout=config.dropout)
    # The full table stays on the host whatever .to() asks (FullNodeEmbedding).
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


def _fail_hook(epoch: int) -> None:
    spec = os.environ.get(FAIL_ENV)
    if not spec or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) != 0:
        return
    fail_rank, fail_epoch = (int(v) for v in spec.split(":"))
    if dist.rank() == fail_rank and epoch == fail_epoch:
        print(f"[{FAIL_ENV}] rank {fail_rank} exits after epoch {epoch}", file=sys.stderr,
              flush=True)
        os._exit(17)


def _epoch_line(record: dict[str, Any]) -> str:
    line = (f"run {record['run']} epoch {record['epoch']}: loss {record['loss']:.4f}, "
            f"{record['epoch_seconds']:.2f} s")
    if "val_acc" in record:
        line += f", val {record['val_acc']:.4f}, test {record['test_acc']:.4f}"
    return line


def _stats(values: Sequence[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": list(values)}


@dataclass
class RunParts:
    """What one run trains: the model, its DDP wrapper (the model itself in one process),
    the optimizers (``gnn``, ``emb``) and the training loader."""

    model: NodeClassifier
    ddp_model: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    loader: NeighborLoader


class Trainer:
    """State of one job: data, layout and output; :meth:`fit_run` trains one seed."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.main = dist.is_main()
        self.out = Path(config.output)
        self.ckpt_path = self.out / CHECKPOINT_NAME
        self.progress = self.main and sys.stderr.isatty()
        self.dataset = load_dataset(config.dataset, config.root)
        ntrain = self.dataset.train_idx.numel()
        if config.batch_size > ntrain:
            raise ValueError(f"batch_size={config.batch_size} is larger than the training split "
                             f"of {self.dataset.name} ({ntrain} nodes)")
        self.layout = build_layout(config, self.dataset, device)
        # The sampler runs where the graph lives: on the GPU when training on one. Batches
        # sampled on the host for a GPU are pinned, so their copies overlap with compute.
        self.graph = self.dataset.graph.to(device) if device.type == "cuda" else self.dataset.graph
        self.pin_memory = self.graph.device.type == "cpu" and device.type == "cuda"
        self.y = self.dataset.y.to(device)
        self.splits = {"val": self.dataset.valid_idx, "test": self.dataset.test_idx}
        self.history: list[dict[str, Any]] = []
        self.finished: list[dict[str, Any]] = []

    # --- checkpoints -------------------------------------------------------------------------

    def restore(self) -> dict[str, Any] | None:
        """The checkpoint to continue from, when resuming (``--resume`` or a torchrun restart)."""
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        if not (self.config.resume or restarted) or not self.ckpt_path.exists():
            return None
        state = load_checkpoint(self.ckpt_path, self.config, self.layout.digest)
        self.history, self.finished = state["history"], state["finished_runs"]
        return state

    def save(self, run: int, epoch: int, model: NodeClassifier,
             optimizers: dict[str, torch.optim.Optimizer], run_state: dict[str, Any]) -> None:
        rngs = [rng_state()]
        if dist.world_size() > 1:
            rngs = [None] * dist.world_size()
            torch.distributed.all_gather_object(rngs, rng_state())
        if self.main:
            save_checkpoint(self.ckpt_path, {
                "config": self.config.to_dict(), "row_assignment_hash": self.layout.digest,
                "run": run, "epoch": epoch, "model": model.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "rng": rngs, "run_state": run_state, "finished_runs": self.finished,
                "history": self.history})
            atomic_write_text(self.out / "metrics.jsonl",
                              "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.history))
        dist.barrier()  # the checkpoint is on disk before any rank moves on (or dies)

    # --- one run -----------------------------------------------------------------------------

    def setup_run(self, run: int) -> RunParts:
        """Model, DDP wrapper, optimizers and train loader of run ``run``, seeded with
        ``seed + run`` (the same on every rank), then the global RNG reseeded with
        ``seed + run + rank`` (dropout differs per rank)."""
        cfg, device = self.config, self.device
        run_seed = cfg.seed + run
        seed_everything(run_seed)
        model = build_model(cfg, self.dataset, self.layout, device, run_seed)
        parts = RunParts(model, distribute(model, device), make_optimizers(cfg, model),
                         NeighborLoader(self.graph, self.dataset.train_idx, cfg.fanouts,
                                        cfg.batch_size, shuffle=True, rank=dist.rank(),
                                        world_size=dist.world_size(), seed=run_seed,
                                        drop_last=False, prefetch=1,
                                        pin_memory=self.pin_memory))
        seed_everything(run_seed + dist.rank())
        return parts

    def fit_run(self, run: int, resume: dict[str, Any] | None) -> dict[str, Any]:
        """Train run ``run`` (continuing from ``resume`` when it stopped inside this run) and
        return its result: best validation accuracy and the test accuracy at that epoch."""
        cfg, device = self.config, self.device
        run_seed = cfg.seed + run
        parts = self.setup_run(run)
        model, optimizers = parts.model, parts.optimizers
        run_state: dict[str, Any] = {"best_val": -1.0, "best_test": 0.0, "best_epoch": -1,
                                     "epoch_seconds": [], "best_model": None}
        start = 0
        if resume is not None and resume["run"] == run and resume["epoch"] > 0:
            model.load_state_dict(resume["model"])
            for k, o in optimizers.items():
                o.load_state_dict(resume["optimizers"][k])
            set_rng_state(resume["rng"][dist.rank()])
            run_state, start = resume["run_state"], resume["epoch"]
        y = self.y
        for epoch in range(start, cfg.epochs):
            loss, seconds = self.train_epoch(parts, epoch, desc=f"run {run} epoch {epoch}")
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss} in run {run} epoch {epoch}; stopping. The last good "
                    f"checkpoint ({self.ckpt_path}, after epoch {epoch - 1}) is kept")
            sync_buffers(model)
            run_state["epoch_seconds"].append(seconds)
            record = {"run": run, "epoch": epoch, "loss": loss, "epoch_seconds": seconds}
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                acc = evaluate_sampled(model, self.graph, y, self.splits, cfg.eval_fanouts,
                                       cfg.eval_batch_size, device, cfg.amp, seed=run_seed,
                                       ogb_name=self.dataset.ogb_name,
                                       pin_memory=self.pin_memory)
                record.update(val_acc=acc["val"], test_acc=acc["test"])
                if acc["val"] > run_state["best_val"]:
                    run_state.update(best_val=acc["val"], best_test=acc["test"], best_epoch=epoch)
                    if cfg.layerwise_inference:
                        run_state["best_model"] = copy.deepcopy(model.state_dict())
            self.history.append(record)
            if self.main:
                tqdm.write(_epoch_line(record))
            self.save(run, epoch + 1, model, optimizers, run_state)
            _fail_hook(epoch)
        result = {"run": run, "seed": run_seed, "val_acc": run_state["best_val"],
                  "test_acc": run_state["best_test"], "best_epoch": run_state["best_epoch"],
                  "epoch_seconds": statistics.fmean(run_state["epoch_seconds"])}
        if cfg.layerwise_inference:
            model.load_state_dict(run_state["best_model"])
            acc = evaluate_full(lambda: self.predict_all(model), self.dataset.y, self.splits,
                                self.dataset.ogb_name)
            result.update(val_acc=acc["val"], test_acc=acc["test"],
                          sampled_val_acc=run_state["best_val"],
                          sampled_test_acc=run_state["best_test"])
        self.finished.append(result)
        self.model = model
        self.save(run + 1, 0, model, optimizers, {})
        return result

    def train_epoch(self, parts: RunParts, epoch: int, desc: str = "",
                    max_batches: int | None = None) -> tuple[float, float]:
        """One pass over this rank's share of the training seeds (or its first
        ``max_batches`` batches, for benchmarks).

        Returns:
            (mean training loss over all ranks' seeds, wall seconds of the slowest rank).
        """
        ddp_model, model, optimizers, loader = (parts.ddp_model, parts.model, parts.optimizers,
                                                parts.loader)
        y = self.y
        ddp_model.train()
        loader.set_epoch(epoch)
        # Loss summed on the device: no host sync per step.
        total = torch.zeros(2, dtype=torch.float64, device=self.device)  # (sum loss * n, n)
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=desc, disable=not self.progress, leave=False,
                   total=len(loader) if max_batches is None else min(max_batches, len(loader)))
        for i, batch in enumerate(bar):
            if max_batches is not None and i == max_batches:
                break
            batch = batch.to(self.device, non_blocking=True)
            target = y[batch.n_id[: batch.batch_size]]  # [batch_size]
            with autocast(self.device, self.config.amp):
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
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        loss_sum, count = dist.all_reduce_sum(total).tolist()
        seconds = float(dist.all_reduce_max(seconds.to(self.device)))
        return loss_sum / max(count, 1.0), seconds

    @torch.no_grad()
    def predict_all(self, model: NodeClassifier) -> Tensor:
        """Logits of every node by layer-wise full-neighbour inference, [N, C] on the host."""
        with autocast(self.device, self.config.amp):
            return model.inference(self.graph, self.config.eval_batch_size, self.device,
                                   progress=self.progress).float()

    # --- the job -----------------------------------------------------------------------------

    def summary(self, seconds: float) -> dict[str, Any]:
        model, cfg = self.model, self.config
        emb_params = sum(p.numel() for p in model.embedding_parameters())
        full_params = self.dataset.num_nodes * cfg.emb_dim
        peak = torch.tensor([float(peak_memory_bytes(self.device))], dtype=torch.float64)
        peak = int(dist.all_reduce_max(peak.to(self.device)))
        epoch_seconds = [r["epoch_seconds"] for r in self.history]
        return {
            "dataset": self.dataset.name, "model": cfg.model, "emb": cfg.emb,
            "test_acc": _stats([r["test_acc"] for r in self.finished]),
            "val_acc": _stats([r["val_acc"] for r in self.finished]),
            "runs": self.finished,
            "epoch_seconds": statistics.fmean(epoch_seconds) if epoch_seconds else 0.0,
            "embedding_parameters": emb_params,
            "full_table_parameters": full_params,
            "compression_ratio": full_params / emb_params if emb_params else None,
            "gnn_parameters": sum(p.numel() for p in model.gnn_parameters()),
            "tt_p_shapes": self.layout.tt_p_shapes, "tt_q_shapes": self.layout.tt_q_shapes,
            "partition_stats": self.layout.stats,
            "row_assignment_hash": self.layout.digest,
            "peak_memory_bytes": peak, "world_size": dist.world_size(),
            "device": str(self.device), "total_seconds": seconds,
            "dataset_summary": self.dataset.summary(), "output": str(self.out),
        }

    def fit(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        if self.main:
            atomic_write_json(self.out / "config.json", self.config.to_dict())
        resume = self.restore()
        first = resume["run"] if resume is not None else 0
        if first >= self.config.runs and self.finished:
            self.model = build_model(self.config, self.dataset, self.layout, self.device,
                                     self.config.seed)
        for run in range(first, self.config.runs):
            self.fit_run(run, resume)
        summary = self.summary(time.perf_counter() - t0)
        if self.main:
            atomic_write_json(self.out / "summary.json", summary)
        return summary


def run(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.runs`` runs and write the output directory; returns the summary (on
    every rank).

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
        return Trainer(config, device).fit()
    finally:
        torch.set_num_threads(threads)
        dist.cleanup(owned)


def format_summary(summary: dict[str, Any]) -> str:
    """The final table: accuracy, embedding size vs a full table, time, output."""
    def pm(s: dict[str, Any]) -> str:
        return f"{s['mean']:.4f} ± {s['std']:.4f}"

    ratio = summary["compression_ratio"]
    row = {"dataset": summary["dataset"], "model": summary["model"], "emb": summary["emb"],
           "runs": len(summary["runs"]), "val_acc": pm(summary["val_acc"]),
           "test_acc": pm(summary["test_acc"]),
           "emb_params": f"{summary['embedding_parameters']:,}",
           "vs_full_table": "-" if ratio is None else f"{ratio:,.1f}x smaller" if ratio > 1
           else "full table",
           "epoch_s": round(summary["epoch_seconds"], 2),
           "total_s": round(summary["total_seconds"], 1)}
    return format_table([row]) + f"\noutput: {summary['output']}"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI of ``gnn-tt train``; no arguments runs the embedded default. Exit status 2 for an
    invalid config, 1 for a failed run."""
    try:
        config = parse_config(argv)
    except (ValueError, FileNotFoundError) as err:
        print(f"gnn-tt train: error: {err}", file=sys.stderr)
        return 2
    try:
        summary = run(config)
    except (CheckpointError, FloatingPointError, ValueError, FileNotFoundError) as err:
        print(f"gnn-tt train: error: {err}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
