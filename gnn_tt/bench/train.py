"""``gnn-tt bench train``: a training batch with the TT embedding vs the full table in every
placement this machine can run: time, memory and the bytes each step hands to collectives.

Products-scale synthetic graph, GraphSAGE 3 x 256, fanouts (15, 10, 5), batch 1000 per rank,
D = 100: ``tt`` (rank 16, hierarchical rows, replicated, DDP all-reduces its cores) against
the full table (``SparseAdam``) in the placements of ``--emb-placement``: ``host`` (a replica
in host memory, rows moved per batch), ``device`` (a replica on the device), ``sharded`` (rows
split over the ranks, fetched with all-to-alls). By default, on the CPU: ``tt``, ``host`` and
``sharded``, each with 2 gloo processes; on GPUs: ``tt``, ``device``, ``host`` and
``sharded`` with one process per GPU, where ``sharded`` needs at least 2 (on one GPU its row
says so). Every variant runs at the same world size, each in its own processes (launched with
``torchrun`` when there are several) so their peak memories do not mix.

With ``--max-batches K`` only the first K batches of the epoch are timed and the epoch time is
extrapolated (seconds / K * batches per epoch of a rank): the ``timed`` column says so. The
bytes per step are counted during the timed batches (mean over the ranks; see
:mod:`gnn_tt.common.comm`), and the formula (:func:`~gnn_tt.common.comm.step_comm_bytes`) is
evaluated on the same batches' ids: the ``formula`` column must equal the count.

Targets: on the CPU, the TT epoch <= 0.7x the full table's; on a GPU, a TT batch <= 1.2x the
device-resident table's (issue 13).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from gnn_tt.bench.output import report

if TYPE_CHECKING:  # for annotations only: the training stack loads torch_geometric, see worker()
    from gnn_tt.models import NodeClassifier
    from gnn_tt.sampling import MiniBatch
    from gnn_tt.training.epoch import EpochLoader

# The TT input, then the full table's placements (--emb-placement).
VARIANTS = ("tt", "host", "device", "sharded")
FULL_TABLES = VARIANTS[1:]
# The table class each placement must build: a row is never labelled with a placement the
# training did not use.
TABLE_CLASS = {"host": "FullNodeEmbedding", "device": "DeviceNodeEmbedding",
               "sharded": "ShardedNodeEmbedding"}
COLUMNS = ("input", "placement", "world", "s_per_batch", "epoch_s", "timed", "emb_params",
           "train_state_MB", "peak_MB", "comm_MB_per_step", "formula_MB_per_step",
           "wire_MB_per_step", "vs_full", "note")

# The shapes of the --formula table (SAGE 3 x 256, TT rank 16), with the distinct ids of a
# 1000-seed batch by default: products' measured on synthetic-products (fanouts 15, 10, 5);
# papers100M's the bound without repeats, 1000 (1 + 12 + 12^2 + 12^3) (fanouts 12, 12, 12).
SCALE_SHAPES = {
    "products": {"num_nodes": 2_449_029, "dim": 100, "classes": 47, "p": (125, 140, 140),
                 "q": (4, 5, 5), "unique_ids": 574_861},
    "papers100M": {"num_nodes": 111_059_956, "dim": 128, "classes": 172, "p": (512, 500, 500),
                   "q": (8, 4, 4), "unique_ids": 1_885_000},
}
# Effective bandwidth of one GPU's link in one direction, bytes / s: PCIe 4.0 and 5.0 x16
# (32 and 64 GB/s raw), NVLink 4 on an H100 SXM (900 GB/s both directions together).
LINKS = {"pcie4": 25e9, "pcie5": 50e9, "nvlink4": 450e9}


def _config(args: argparse.Namespace, variant: str):
    from gnn_tt.training.config import TrainConfig

    placement = {} if variant == "tt" else {"emb_placement": variant}
    return TrainConfig(dataset=args.dataset, model="sage", emb="tt" if variant == "tt" else "full",
                       emb_dim=math.prod(args.tt_q_shapes), tt_rank=16,
                       tt_q_shapes=args.tt_q_shapes, tt_p_shapes=args.tt_p_shapes,
                       partition=args.partition, num_layers=3, hidden=256, dropout=0.5,
                       fanouts=(15, 10, 5), batch_size=1000, epochs=1, device=args.device,
                       cache_dir=args.cache_dir, output=f"{args.workdir}/{variant}",
                       overwrite=True, **placement)  # a scratch directory, reused by every run


class FirstBatches:
    r"""The first ``max_batches`` batches of each epoch of ``loader``: the training epoch
    runs unchanged over a prefix of its batches.

    Args:
        loader (EpochLoader): the training loader.
        max_batches (int): batches per epoch, at least 1.
    """

    def __init__(self, loader: EpochLoader, max_batches: int) -> None:
        if max_batches < 1:
            raise ValueError(f"'{self.__class__.__name__}': max_batches must be >= 1, "
                             f"got {max_batches}")
        self.loader, self.max_batches = loader, max_batches

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return min(self.max_batches, len(self.loader))

    def __iter__(self) -> Iterator[MiniBatch]:
        batches = iter(self.loader)
        try:
            yield from itertools.islice(batches, len(self))
        finally:
            batches.close()  # stops the loader's prefetch thread now, not at garbage collection


def _formula_bytes(model: NodeClassifier, loader: FirstBatches, epoch: int, table: str,
                   num_nodes: int, device: torch.device) -> dict[str, int]:
    """:func:`~gnn_tt.common.comm.step_comm_bytes` summed over the batches of ``epoch`` of
    ``loader`` (the ones just trained on: the loader is deterministic), for this rank.
    Collective: the largest distinct-id count and the rows each shard serves come from every
    rank (reduced on ``device``: NCCL reduces device tensors only)."""
    from gnn_tt.common import distributed as dist
    from gnn_tt.common.comm import KINDS, step_comm_bytes
    from gnn_tt.embedding.sharded_table import rows_of_rank

    world, rank = dist.world_size(), dist.rank()
    ignored = set(model.ddp_ignored_names())
    dense = sum(p.numel() for n, p in model.named_parameters() if n not in ignored)
    buffers = sum(b.numel() * b.element_size() for n, b in model.named_buffers()
                  if n not in ignored)
    stops = torch.tensor([rows_of_rank(num_nodes, world, r)[1] for r in range(world)])
    totals = dict.fromkeys(KINDS, 0)
    loader.set_epoch(epoch)
    for batch in loader:
        ids = torch.unique(batch.n_id.cpu())                                # [U]
        owners = torch.searchsorted(stops, ids, right=True)                 # [U] shard of each
        served = dist.all_reduce_sum(torch.bincount(owners, minlength=world).to(device))  # [W]
        u_max = dist.all_reduce_max(torch.tensor([ids.numel()], device=device))
        step = step_comm_bytes(table, world_size=world, dense_params=dense,
                               embedding_dim=model.node_input.embedding_dim,
                               unique_ids=ids.numel(), max_unique_ids=int(u_max),
                               served_rows=int(served[rank]), buffer_bytes=buffers)
        for kind, nbytes in step.items():
            totals[kind] += nbytes
    return totals


def _state_bytes(model: NodeClassifier, optimizers: dict[str, torch.optim.Optimizer]) -> int:
    """This rank's parameters (a sharded table's shard included) and optimizer state."""
    state = sum(p.numel() * p.element_size() for p in model.parameters())
    for opt in optimizers.values():
        state += sum(v.numel() * v.element_size() for s in opt.state.values()
                     for v in s.values() if torch.is_tensor(v))
    return state


def worker(args: argparse.Namespace) -> dict[str, Any] | None:
    """Time one epoch (or ``max_batches`` batches) of one variant on this rank; the row on
    rank 0, ``None`` on the others. Under torchrun it joins the process group and leaves it
    once the training objects are gone (a DDP wrapper must not outlive its group)."""
    from gnn_tt.common import distributed as dist
    from gnn_tt.training.train import resolve_device

    config = _config(args, args.worker)
    device = resolve_device(config.device)
    owned = dist.init_from_env(device)
    try:
        row = _measure(args, config, device)
        return row if dist.is_main() else None
    finally:
        dist.cleanup(owned)


def _measure(args: argparse.Namespace, config, device: torch.device) -> dict[str, Any]:
    """The row of ``args.worker`` on this rank (see :func:`worker`)."""
    from gnn_tt.common import distributed as dist
    from gnn_tt.common.comm import wire_bytes
    from gnn_tt.common.memory import peak_memory_bytes
    from gnn_tt.training.epoch import train_epoch
    from gnn_tt.training.train import Trainer

    variant = args.worker
    t0 = time.perf_counter()
    trainer = Trainer(config, device)
    setup_seconds = time.perf_counter() - t0
    parts = trainer.setup_run(0)
    model, y = parts.model, trainer.data.y
    built = type(model.node_input).__name__
    if variant != "tt" and built != TABLE_CLASS[variant]:
        raise RuntimeError(f"placement {variant!r} built a {built}, not a "
                           f"{TABLE_CLASS[variant]}")
    # Warm-up batch (allocator, kernels), then the timed pass.
    train_epoch(dataclasses.replace(parts, loader=FirstBatches(parts.loader, 1)), y, 0,
                device, config.amp, progress=trainer.progress)
    batches = len(parts.loader)
    timed = batches if args.max_batches is None else min(args.max_batches, batches)
    loader = FirstBatches(parts.loader, timed)
    stats = train_epoch(dataclasses.replace(parts, loader=loader), y, 1, device, config.amp,
                        progress=trainer.progress)
    formula = _formula_bytes(model, loader, 1, variant, trainer.data.dataset.num_nodes,
                             device)
    # Exactly equal on every rank; and the rank mean per step, for the table.
    sums = dist.all_reduce_sum(torch.tensor(
        [float(formula != stats.comm.bytes), float(sum(formula.values()))],
        dtype=torch.float64, device=device))
    mismatch, formula_mean = sums.tolist()
    maxima = dist.all_reduce_max(torch.tensor(
        [float(peak_memory_bytes(device)), float(_state_bytes(model, parts.optimizers))],
        dtype=torch.float64, device=device)).tolist()
    world = dist.world_size()
    sent = stats.comm_bytes_per_step
    row = {
        "input": "tt (rank 16)" if variant == "tt" else "full",
        "placement": "replicated" if variant == "tt" else variant,
        "world": world,
        "s_per_batch": stats.seconds / timed,
        "epoch_s": stats.seconds / timed * batches,
        "timed": f"{timed}/{batches} batches" + (" (extrapolated)" if timed < batches else ""),
        "emb_params": sum(model.node_input.parameter_counts().values()),
        "train_state_MB": maxima[1] / 2**20,
        "peak_MB": maxima[0] / 2**20,
        "comm_MB_per_step": sum(sent.values()) / 1e6,
        "formula_MB_per_step": formula_mean / (world * max(stats.steps, 1)) / 1e6,
        "formula_equals_count": mismatch == 0,
        "wire_MB_per_step": sum(wire_bytes(k, b, world) for k, b in sent.items()) / 1e6,
        "comm_bytes_per_step": sent,
        "table": built,
        "variant": variant,
        "setup_s": setup_seconds,
        "num_nodes": trainer.data.dataset.num_nodes,
        "note": "" if mismatch == 0 else "formula != count",
    }
    return row


def _run_variant(variant: str, forward: Sequence[str], world: int) -> dict[str, Any] | None:
    """The row of one variant, run in its own process(es); ``None`` when a worker failed."""
    worker_args = ["-m", "gnn_tt.bench.train", *forward, "--worker", variant]
    if world == 1:
        cmd = [sys.executable, *worker_args]
    else:  # torchrun picks a free port itself (--standalone)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={world}", *worker_args]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"gnn-tt bench train: the {variant} worker failed (exit {done.returncode})",
              file=sys.stderr)
        return None
    return json.loads(lines[-1])


def formula_rows(unique_ids: dict[str, int], ranks: Sequence[int]) -> list[dict[str, Any]]:
    """Bytes per step of TT and of each full-table placement at :data:`SCALE_SHAPES`, from
    :func:`~gnn_tt.common.comm.step_comm_bytes` with every rank's batch holding
    ``unique_ids[shape]`` distinct ids (served rows: as many, ids spread evenly), and their
    time on each link of :data:`LINKS` (the wire bytes of one rank over its link)."""
    from gnn_tt.common.comm import step_comm_bytes, wire_bytes
    from gnn_tt.embedding.tt_embedding import TTEmbedding
    from gnn_tt.models import GraphSAGE

    rows = []
    for name, shape in SCALE_SHAPES.items():
        gnn = sum(p.numel() for p in GraphSAGE(shape["dim"], 256, shape["classes"],
                                                num_layers=3).parameters())
        cores = sum(p.numel() for p in TTEmbedding(shape["num_nodes"], shape["dim"],
                                                   tt_ranks=16, tt_p_shapes=shape["p"],
                                                   tt_q_shapes=shape["q"]).parameters())
        for world in ranks:
            tt_wire = None
            for table, label in (("tt", "tt"), ("host", "host / device"),
                                 ("sharded", "sharded")):
                sent = step_comm_bytes(table, world_size=world,
                                       dense_params=gnn + (cores if table == "tt" else 0),
                                       embedding_dim=shape["dim"], unique_ids=unique_ids[name])
                wire = sum(wire_bytes(k, b, world) for k, b in sent.items())
                tt_wire = wire if tt_wire is None else tt_wire
                rows.append({"shape": name, "unique_ids": unique_ids[name], "world": world,
                             "table": label, "MB_per_step": sum(sent.values()) / 1e6,
                             "wire_MB_per_step": wire / 1e6, "vs_tt": wire / tt_wire,
                             **{f"ms_{link}": wire / bw * 1e3 for link, bw in LINKS.items()},
                             "bytes_by_kind": sent, "gnn_params": gnn, "tt_params": cores})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gnn-tt bench train", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="synthetic-products",
                        help="dataset spec (default: synthetic-products, 2,449,029 nodes)")
    parser.add_argument("--tt-p-shapes", type=lambda s: tuple(int(v) for v in s.split(",")),
                        default=None, help="row factors (default: from the node count)")
    parser.add_argument("--tt-q-shapes", type=lambda s: tuple(int(v) for v in s.split(",")),
                        default=(4, 5, 5), help="column factors; D = their product (default: "
                        "4,5,5, D = 100; papers100M width: 8,4,4)")
    parser.add_argument("--partition", default="hierarchical",
                        help="row layout of the tt variant (default: hierarchical; 'random' "
                             "needs no METIS run: the worst case for prefix sharing)")
    parser.add_argument("--max-batches", type=int, default=20,
                        help="time this many batches and extrapolate to the epoch; 0 = the "
                             "whole epoch (default: 20)")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated subset of {','.join(VARIANTS)} (default: "
                             f"tt,host,sharded on the CPU, all on GPUs)")
    parser.add_argument("--nproc", type=int, default=None,
                        help="processes of every variant (default: 2 on the CPU, one per "
                             "visible GPU)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--cache-dir", default="cache/partitions",
                        help="partition cache (default: cache/partitions)")
    parser.add_argument("--workdir", default="cache/bench_train",
                        help="scratch output directory of the workers")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--formula", action="store_true",
                        help="train nothing: print the bytes per step the formula gives at the "
                             "products and papers100M shapes, and their time on PCIe 4, PCIe 5 "
                             "and NVLink 4")
    parser.add_argument("--unique-ids", default=None,
                        help="--formula: distinct ids per rank's batch, e.g. "
                             "products=574861,papers100M=1885000 (default: those)")
    parser.add_argument("--ranks", default="2,8", help="--formula: world sizes (default: 2,8)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.max_batches < 0:
        parser.error(f"--max-batches must be >= 0, got {args.max_batches}")
    args.max_batches = args.max_batches or None
    if args.formula:
        unique_ids = {k: v["unique_ids"] for k, v in SCALE_SHAPES.items()}
        for item in filter(None, (args.unique_ids or "").split(",")):
            key, _, value = item.partition("=")
            if key not in unique_ids or not value.isdigit():
                parser.error(f"--unique-ids item {item!r} is not SHAPE=COUNT with SHAPE in "
                             f"{', '.join(unique_ids)}")
            unique_ids[key] = int(value)
        rows = formula_rows(unique_ids, [int(w) for w in args.ranks.split(",")])
        report("train_comm_formula", rows, args.output, {"links_bytes_per_s": LINKS},
               columns=("shape", "unique_ids", "world", "table", "MB_per_step",
                        "wire_MB_per_step", "vs_tt", *(f"ms_{k}" for k in LINKS)))
        return 0
    if args.worker:
        row = worker(args)
        if row is not None:
            print(json.dumps(row))
        return 0

    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    world = args.nproc or (torch.cuda.device_count() if cuda else 2)
    if world < 1:
        parser.error(f"--nproc must be >= 1, got {world}")
    # On the CPU, TT, host and sharded; on GPUs, TT and every placement.
    variants = args.variants.split(",") if args.variants else \
        list(VARIANTS) if cuda else ["tt", "host", "sharded"]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    forward = [a for a in (argv if argv is not None else sys.argv[1:])]
    rows: list[dict[str, Any]] = []
    for variant in variants:
        if variant == "sharded" and world < 2:
            what = f"{world} GPU" if cuda else f"--nproc {world}"
            rows.append({"input": "full", "placement": "sharded", "world": world, "variant":
                         variant, "note": f"not run: needs >= 2 ranks ({what} here)"})
            continue
        row = _run_variant(variant, forward, world)
        if row is None:
            return 1
        rows.append(row)
    full = [r for r in rows if r["variant"] in FULL_TABLES and "epoch_s" in r]
    extra: dict[str, Any] = {"world_size": world, "os_cpu_count": os.cpu_count()}
    if full:
        fastest = min(full, key=lambda r: r["epoch_s"])
        for r in rows:
            if "epoch_s" in r:
                r["vs_full"] = r["epoch_s"] / fastest["epoch_s"]
        extra["fastest_full"] = fastest["placement"]
        tt = next((r for r in rows if r["variant"] == "tt" and "epoch_s" in r), None)
        if tt is not None:
            extra["tt_over_fastest_full"] = tt["vs_full"]
            print(f"TT epoch / fastest full-table epoch ({fastest['placement']}) = "
                  f"{tt['vs_full']:.3f}")
            device_row = next((r for r in full if r["variant"] == "device"), None)
            if device_row is not None:
                ratio = tt["s_per_batch"] / device_row["s_per_batch"]
                extra.update(tt_over_device_batch=ratio, target="<= 1.2", met=ratio <= 1.2)
                print(f"TT batch / device-table batch = {ratio:.3f} (target <= 1.2: "
                      f"{'met' if ratio <= 1.2 else 'NOT met'})")
    report("train", rows, args.output, extra, columns=COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
