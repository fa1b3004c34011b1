"""``gnn-tt bench sampler``: one epoch of neighbour sampling, as training consumes it.

One epoch of :class:`gnn_tt.data.NeighborLoader` over 196,615 seeds (the size of
ogbn-products' train split, drawn at random from all nodes), batch 1000, fanouts (15, 10, 5),
on synthetic-products, for each torch thread count and with and without background prefetch.
Target on the 2-core machine: <= 14 s per epoch (DGL 2.1's C++ sampler there, 13M sampled
edges/s).

The graph is generated in a subprocess (optionally cached in a file), so the memory figures
are the sampler's own with the graph, not the generator's. ``seconds`` is the epoch's wall
time, ``cpu_seconds`` the process CPU time over it: on a machine shared with other jobs the
second is the steadier figure. ``--step-ms`` makes the consumer idle that long per batch,
like a training step on a GPU, to show what prefetch hides.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from gnn_tt.bench.output import report
from gnn_tt.data.graph import CSRGraph
from gnn_tt.sampling.loader import NeighborLoader
from gnn_tt.common.io import atomic_torch_save
from gnn_tt.common.memory import current_rss_bytes, peak_memory_bytes

TARGET_SECONDS = 14.0  # DGL 2.1 on the 2-core machine, products-sized graph
OGBN_PRODUCTS_TRAIN = 196_615


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gnn-tt bench sampler", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="synthetic-products",
                        help="any load_dataset name, e.g. synthetic:nodes=200000,degree=25")
    parser.add_argument("--num-seeds", type=int, default=OGBN_PRODUCTS_TRAIN,
                        help="seeds per epoch (distinct random nodes)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--fanouts", type=int, nargs="+", default=[15, 10, 5])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch intra-op thread counts to run")
    parser.add_argument("--prefetch", type=int, nargs="+", default=[0, 1],
                        help="loader prefetch depths to run (0 = sample in the consumer)")
    parser.add_argument("--step-ms", type=float, default=0.0,
                        help="consumer idle time per batch (a simulated GPU training step)")
    parser.add_argument("--device", default="cpu", help="device the graph and sampling live on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None,
                        help="file holding the graph's CSR: read if present, else written")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    parser.add_argument("--generate-to", default=None, help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args(argv)
    for name in ("num_seeds", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.threads) < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def _save_graph(dataset: str, path: Path) -> None:
    """Worker: build the dataset and save its CSR (the generator's memory dies with it)."""
    from gnn_tt.data import load_dataset

    graph = load_dataset(dataset).graph
    atomic_torch_save({"dataset": dataset, "rowptr": graph.rowptr, "col": graph.col,
                       "num_nodes": graph.num_nodes}, path)


def load_graph(dataset: str, cache: str | None) -> tuple[CSRGraph, float]:
    """The dataset's graph, from ``cache`` if it holds it, else generated in a subprocess
    (and saved to ``cache`` when given); returns it and the seconds generation took."""
    with tempfile.TemporaryDirectory(prefix="gnn_tt_bench_sampler_") as tmp:
        path = Path(cache) if cache else Path(tmp) / "graph.pt"
        seconds = 0.0
        if not path.exists():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "gnn_tt.bench.sampler", "--dataset", dataset,
                            "--generate-to", str(path)], check=True)
            seconds = time.perf_counter() - start
        saved = torch.load(path, weights_only=True)
    if saved["dataset"] != dataset:
        raise ValueError(f"--cache {cache} holds the graph of {saved['dataset']!r}, "
                         f"not of --dataset {dataset!r}")
    return CSRGraph(saved["rowptr"], saved["col"], int(saved["num_nodes"])), seconds


def run_epoch(graph: CSRGraph, seeds: torch.Tensor, args: argparse.Namespace, threads: int,
              prefetch: int) -> dict[str, Any]:
    """One epoch through a fresh loader; returns one table row."""
    torch.set_num_threads(threads)
    loader = NeighborLoader(graph, seeds, args.fanouts, args.batch_size, seed=args.seed,
                            prefetch=prefetch)
    edges = nodes = 0
    max_rss = current_rss_bytes()
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in tqdm(loader, desc=f"threads={threads} prefetch={prefetch}",
                      disable=not sys.stderr.isatty()):
        edges += batch.num_sampled_edges
        nodes += batch.n_id.numel()
        max_rss = max(max_rss, current_rss_bytes())
        if args.step_ms:
            time.sleep(args.step_ms / 1e3)  # the consumer busy elsewhere (GPU), CPU free
    if graph.device.type == "cuda":
        torch.cuda.synchronize(graph.device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "device": str(graph.device), "threads": threads, "prefetch": prefetch,
        "batches": len(loader), "seconds": wall, "cpu_seconds": cpu,
        "edges_per_s": edges / wall, "edges_per_cpu_s": edges / cpu,
        "edges_per_batch": edges / len(loader), "nodes_per_batch": nodes / len(loader),
        "max_rss_gb": max_rss / 2**30,
        # The target is for the official setting only.
        "within_target": wall <= TARGET_SECONDS if _is_official(args) else "n/a",
    }


def _is_official(args: argparse.Namespace) -> bool:
    return (args.dataset == "synthetic-products" and args.num_seeds == OGBN_PRODUCTS_TRAIN
            and args.batch_size == 1000 and args.fanouts == [15, 10, 5] and not args.step_ms)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.generate_to:
        _save_graph(args.dataset, Path(args.generate_to))
        return 0
    graph, gen_seconds = load_graph(args.dataset, args.cache)
    if args.num_seeds > graph.num_nodes:
        print(f"gnn-tt bench sampler: --num-seeds {args.num_seeds} exceeds the graph's "
              f"{graph.num_nodes} nodes", file=sys.stderr)
        return 2
    graph = graph.to(args.device)
    print(f"{args.dataset}: {graph}" + (f", generated in {gen_seconds:.0f} s" if gen_seconds
                                         else ""))
    seeds = torch.randperm(graph.num_nodes,
                           generator=torch.Generator().manual_seed(args.seed))[:args.num_seeds]
    rows = [run_epoch(graph, seeds, args, threads, prefetch)
            for threads in args.threads for prefetch in args.prefetch]
    report("sampler", rows, args.output, extra={
        "dataset": args.dataset, "num_nodes": graph.num_nodes, "num_edges": graph.num_edges,
        "num_seeds": args.num_seeds, "batch_size": args.batch_size, "fanouts": args.fanouts,
        "step_ms": args.step_ms, "target_seconds": TARGET_SECONDS,
        "peak_memory_bytes": peak_memory_bytes(graph.device)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
