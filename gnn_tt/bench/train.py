"""``gnn-tt bench train``: training epoch time and peak memory, TT embedding vs full table.

Products-scale synthetic graph, GraphSAGE 3 x 256, fanouts (15, 10, 5), batch 1000, D = 100:
``tt`` (rank 16, hierarchical rows) and ``full`` (host table, SparseAdam), side by side. Each
variant runs in its own subprocess so their peak memories do not mix. With ``--max-batches K``
only the first K batches of the epoch are timed and the epoch time is extrapolated
(seconds / K * batches per epoch): the table says so in its ``timed`` column.

On a GPU (``--device cuda``; ``launch/gpu_check.sh``) the same pair compares a batch of TT on the
GPU (Triton kernels, bf16 autocast) with one whose rows come from the host-resident table,
moved per batch; ``--tt-q-shapes 8,4,4`` gives papers100M's width D = 128.

Target of the issue: TT epoch <= 0.7x the full-table epoch.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from gnn_tt.bench.output import report

if TYPE_CHECKING:  # for annotations only: the training stack loads torch_geometric, see worker()
    from gnn_tt.sampling import MiniBatch
    from gnn_tt.training.epoch import EpochLoader

VARIANTS = ("tt", "full")


def _config(args: argparse.Namespace, emb: str):
    from gnn_tt.training.config import TrainConfig

    return TrainConfig(dataset=args.dataset, model="sage", emb=emb,
                       emb_dim=math.prod(args.tt_q_shapes), tt_rank=16,
                       tt_q_shapes=args.tt_q_shapes, tt_p_shapes=args.tt_p_shapes,
                       partition=args.partition, num_layers=3, hidden=256, dropout=0.5,
                       fanouts=(15, 10, 5), batch_size=1000, epochs=1, device=args.device,
                       cache_dir=args.cache_dir, output=f"{args.workdir}/{emb}",
                       overwrite=True)  # a scratch directory, reused by every bench run


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


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time one epoch (or ``max_batches`` batches) of one variant in this process."""
    from gnn_tt.common.memory import current_rss_bytes, peak_memory_bytes
    from gnn_tt.training.epoch import train_epoch
    from gnn_tt.training.train import Trainer, resolve_device

    config = _config(args, args.worker)
    device = resolve_device(config.device)
    t0 = time.perf_counter()
    trainer = Trainer(config, device)
    setup_seconds = time.perf_counter() - t0
    parts = trainer.setup_run(0)
    y = trainer.data.y
    rss_before = current_rss_bytes()
    # Warm-up batch (allocator, kernels), then the timed pass.
    train_epoch(dataclasses.replace(parts, loader=FirstBatches(parts.loader, 1)), y, 0, device,
                config.amp, progress=trainer.progress)
    batches = len(parts.loader)
    timed = batches if args.max_batches is None else min(args.max_batches, batches)
    _, seconds = train_epoch(dataclasses.replace(parts, loader=FirstBatches(parts.loader, timed)),
                             y, 1, device, config.amp, progress=trainer.progress)
    state_bytes = sum(t.numel() * t.element_size() for t in parts.model.state_dict().values())
    for opt in parts.optimizers.values():
        state_bytes += sum(v.numel() * v.element_size() for s in opt.state.values()
                           for v in s.values() if torch.is_tensor(v))
    return {
        "emb": args.worker,
        "epoch_s": seconds / timed * batches,
        "timed": f"{timed}/{batches} batches" + (" (extrapolated)" if timed < batches else ""),
        "s_per_batch": seconds / timed,
        "emb_params": sum(p.numel() for p in parts.model.embedding_parameters()),
        "train_state_MB": state_bytes / 2**20,
        "rss_growth_MB": (current_rss_bytes() - rss_before) / 2**20,
        "peak_MB": peak_memory_bytes(device) / 2**20,
        "setup_s": setup_seconds,
        "num_nodes": trainer.data.dataset.num_nodes,
    }


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
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--cache-dir", default="cache/partitions",
                        help="partition cache (default: cache/partitions)")
    parser.add_argument("--workdir", default="cache/bench_train",
                        help="scratch output directory of the workers")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.max_batches is not None and args.max_batches < 0:
        parser.error(f"--max-batches must be >= 0, got {args.max_batches}")
    if args.max_batches == 0:
        args.max_batches = None
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    rows = []
    forward = [a for a in (argv if argv is not None else sys.argv[1:])]
    for emb in variants:
        cmd = [sys.executable, "-m", "gnn_tt.bench.train", *forward, "--worker", emb]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            print(f"gnn-tt bench train: the {emb} worker failed (exit {done.returncode})",
                  file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    by = {r["emb"]: r for r in rows}
    extra = {}
    if "tt" in by and "full" in by:
        ratio = by["tt"]["epoch_s"] / by["full"]["epoch_s"]
        for r in rows:
            r["vs_full"] = r["epoch_s"] / by["full"]["epoch_s"]
        extra = {"tt_over_full_epoch": ratio, "target": "<= 0.7", "met": ratio <= 0.7}
        print(f"TT epoch / full-table epoch = {ratio:.3f} (target <= 0.7: "
              f"{'met' if ratio <= 0.7 else 'NOT met'})")
    report("train", rows, args.output, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
