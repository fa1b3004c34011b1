"""``gnn-tt bench kernels``: throughput of the TT lookup kernels against a plain row gather.

For each table shape, TT rank, batch size ``B`` and id distribution, times forward and
forward+backward of

- ``triton``: :func:`kernels.tt_lookup_triton.tt_lookup_triton` (CUDA only),
- ``torch``: :func:`kernels.tt_lookup_torch.tt_lookup_torch`,
- ``gather``: ``table.index_select(0, ids)`` (+ ``grad.index_add_(0, ids, dout)``) on a dense
  table of the same ``D``: the memory-bound floor a TT lookup competes with,

and reports ns per lookup, lookups per second and the fraction of the output-write floor
reached: ``B*D*bytes`` written (plus ``B*D*bytes`` of ``dout`` read for fwd+bwd) at the copy
bandwidth measured on the device. The Triton path is first checked against the torch path.
A method that runs out of GPU memory on a case gets NaN there instead of ending the run.

Ids: ``uniform`` over all ``prod(p)`` rows, or ``local``: uniform inside 32 random windows of
``16*p3`` consecutive rows (16 prefixes each), the shape of a mini-batch drawn from a
partition-ordered graph, where the ``(i1, i2)`` prefix products are shared by many rows.

GPU timings use CUDA events (median of ``--reps`` after a warm-up); ``--quick`` runs the torch
path and the gather on CPU at a tiny size, as a smoke test (wall-clock timing).

Example::

    gnn-tt bench kernels --output results/kernels.json
    gnn-tt bench kernels --quick
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from gnn_tt.bench.output import report
from kernels.tt_lookup_torch import tt_lookup_torch


@dataclass(frozen=True)
class TableShape:
    """A TT table shape of the benchmark.

    Args:
        name (str): label in the table.
        num_embeddings (int): rows of the real table (the dense gather baseline is capped).
        tt_p_shapes (tuple[int, int, int]): row factors, ``prod >= num_embeddings``.
        tt_q_shapes (tuple[int, int, int]): column factors, ``D = prod``.
        ranks (tuple[int, ...]): TT ranks benchmarked on this shape.
    """

    name: str
    num_embeddings: int
    tt_p_shapes: tuple[int, int, int]
    tt_q_shapes: tuple[int, int, int]
    ranks: tuple[int, ...]

    @property
    def dim(self) -> int:
        return math.prod(self.tt_q_shapes)


SHAPES = {
    # The target case: products' rows at rank 32 and D = 64, where fwd+bwd at B = 1e6 should
    # take at most TARGET_NS per lookup and TARGET_RATIO times the gather (FBTT-Embedding
    # reports 416 ns per lookup). First, so a run cut short has measured it.
    "target": TableShape("target", 2_449_029, (125, 140, 140), (4, 4, 4), (32,)),
    "products": TableShape("products", 2_449_029, (125, 140, 140), (4, 5, 5), (8, 16, 32)),
    "papers100M": TableShape("papers100M", 111_059_956, (512, 500, 500), (8, 4, 4), (8, 16, 32)),
}
# Rows of the dense gather baseline table at most (2^24 x 128 fp32 = 8 GiB): papers100M's
# 111M x 128 table would not leave room for the rest; ids are taken modulo this. --quick on
# CPU caps it at 2^18 rows to stay light on a shared machine.
MAX_GATHER_ROWS = 1 << 24
QUICK_GATHER_ROWS = 1 << 18
LOCAL_WINDOWS = 32
TARGET_NS = 4.0
TARGET_RATIO = 3.0
LOCAL_PREFIXES_PER_WINDOW = 16


def make_ids(shape: TableShape, batch: int, kind: str, device: torch.device,
             seed: int = 0) -> torch.Tensor:
    """``batch`` row ids (int64) of ``kind`` ``"uniform"`` or ``"local"`` (see module doc)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    if kind == "uniform":
        return torch.randint(0, shape.num_embeddings, (batch,), generator=gen, device=device)
    if kind != "local":
        raise ValueError(f"make_ids: kind {kind!r} is not 'uniform' or 'local'")
    window = LOCAL_PREFIXES_PER_WINDOW * shape.tt_p_shapes[2]
    starts = torch.randint(0, shape.num_embeddings - window, (LOCAL_WINDOWS,), generator=gen,
                           device=device)
    which = torch.randint(0, LOCAL_WINDOWS, (batch,), generator=gen, device=device)
    return starts[which] + torch.randint(0, window, (batch,), generator=gen, device=device)


def make_cores(shape: TableShape, rank: int, device: torch.device) -> list[torch.Tensor]:
    """Gaussian cores whose product has entries of variance about 1."""
    ranks = (1, rank, rank, 1)
    gen = torch.Generator(device=device).manual_seed(0)
    return [(torch.randn(ranks[k], shape.tt_p_shapes[k], shape.tt_q_shapes[k], ranks[k + 1],
                         generator=gen, device=device) / math.sqrt(ranks[k])).requires_grad_()
            for k in range(3)]


def time_ms(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes per second of a device-to-device copy (read + write counted) of ``nbytes``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), 5, device)
    return 2 * src.numel() * 4 / (ms * 1e-3)


def tt_runner(lookup: Callable[..., torch.Tensor], ids: torch.Tensor, cores: list[torch.Tensor],
              shape: TableShape, backward: bool) -> Callable[[], None]:
    """A closure running one lookup (and its backward with a fixed upstream gradient)."""
    dout = torch.randn(ids.numel(), shape.dim, device=ids.device) if backward else None

    def run() -> None:
        out = lookup(ids, cores, shape.tt_p_shapes, shape.tt_q_shapes)
        if backward:
            torch.autograd.backward(out, dout, inputs=cores)
            for core in cores:
                core.grad = None
    return run


def gather_runner(table: torch.Tensor, grad: torch.Tensor, ids: torch.Tensor,
                  backward: bool) -> Callable[[], None]:
    """Dense row gather (and scatter-add of the same size into a dense gradient buffer)."""
    dout = torch.randn(ids.numel(), table.shape[1], device=ids.device) if backward else None
    ids = ids % table.shape[0]

    def run() -> None:
        table.index_select(0, ids)
        if backward:
            grad.index_add_(0, ids, dout)
    return run


def check_triton(shape: TableShape, rank: int, batch: int, device: torch.device) -> float:
    """Largest relative difference, over the output and every core gradient, between the Triton
    and torch paths on ``batch`` uniform ids."""
    from kernels.tt_lookup_triton import tt_lookup_triton

    cores = make_cores(shape, rank, device)
    ids = make_ids(shape, batch, "uniform", device, seed=1)
    dout = torch.randn(ids.numel(), shape.dim, device=device)
    worst = 0.0
    results = []
    for lookup in (tt_lookup_triton, tt_lookup_torch):
        out = lookup(ids, cores, shape.tt_p_shapes, shape.tt_q_shapes)
        results.append([out.detach(), *torch.autograd.grad(out, cores, dout)])
    for a, b in zip(*results):
        worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item())
    return worst


def profile_cases(cases: Sequence[tuple[TableShape, int, int, str]], reps: int,
                  device: torch.device) -> None:
    """Print, per case, the wall time of Triton fwd+bwd and a torch.profiler table of its
    host ops and GPU kernels: the split between launch/sync overhead and kernel time."""
    from torch.profiler import ProfilerActivity, profile

    from kernels.tt_lookup_triton import tt_lookup_triton

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    for shape, rank, batch, kind in cases:
        ids = make_ids(shape, batch, kind, device)
        run = tt_runner(tt_lookup_triton, ids, make_cores(shape, rank, device), shape, True)
        ms = time_ms(run, reps, device)
        with profile(activities=activities) as prof:
            for _ in range(reps):
                run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"\n## profile {shape.name} R{rank} B={batch} {kind}: fwd+bwd {ms:.3f} ms "
              f"({ms * 1e6 / batch:.3g} ns/lookup), {reps} calls profiled")
        print(prof.key_averages().table(sort_by=sort, row_limit=22, max_name_column_width=48))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gnn-tt bench kernels",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES),
                        help="table shapes")
    parser.add_argument("--batches", nargs="+", type=int, default=[10_000, 100_000, 1_000_000],
                        help="batch sizes B")
    parser.add_argument("--ids", nargs="+", default=["uniform", "local"],
                        choices=["uniform", "local"], help="id distributions")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (median)")
    parser.add_argument("--quick", action="store_true",
                        help="CPU smoke test: torch path and gather only, products rank 8, "
                             "B = 2000")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the table: profile Triton fwd+bwd on each case "
                             "(torch.profiler, CUDA kernels and host ops) and print where the "
                             "time goes")
    parser.add_argument("--device", default="cuda",
                        help="device of the full benchmark; 'cpu' runs the Triton kernels under "
                             "TRITON_INTERPRET=1 (debugging only: very slow)")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        device = torch.device("cpu")
        cases = [(SHAPES["products"], 8, 2000, kind) for kind in args.ids]
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("gnn-tt bench kernels: needs a CUDA GPU (use --quick for the CPU smoke test)",
                  file=sys.stderr)
            return 2
        cases = [(SHAPES[name], rank, batch, kind) for name in args.shapes
                 for rank in SHAPES[name].ranks for batch in args.batches for kind in args.ids]
    if args.profile:
        profile_cases(cases, args.reps, device)
        return 0
    methods = ("torch", "gather") if args.quick else ("triton", "torch", "gather")
    lookups = {"torch": tt_lookup_torch}
    checks = {}
    if "triton" in methods:
        from kernels.tt_lookup_triton import tt_lookup_triton
        lookups["triton"] = tt_lookup_triton
        for shape, rank in sorted({(c[0], c[1]) for c in cases}, key=lambda c: (c[0].name, c[1])):
            checks[f"{shape.name}/R{rank}"] = err = check_triton(
                shape, rank, min(10_000, *args.batches), device)
            print(f"check {shape.name} rank {rank}: max relative difference triton vs torch "
                  f"{err:.2e}")
            if err > 1e-4:
                print(f"gnn-tt bench kernels: Triton disagrees with the torch path on "
                      f"{shape.name} rank {rank} ({err:.2e} > 1e-4)", file=sys.stderr)
                return 1
    bandwidth = copy_bandwidth(device, (1 << 30) if device.type == "cuda" else (1 << 26))
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s on {device}")
    rows = []
    gather_tables: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for shape, rank, batch, kind in tqdm(cases, desc="kernels", disable=not sys.stderr.isatty()):
        ids = make_ids(shape, batch, kind, device)
        cores = make_cores(shape, rank, device)
        if shape.dim not in gather_tables:
            gather_tables.clear()  # one dense table at a time: they are GBs on the GPU
            num_rows = min(shape.num_embeddings,
                           QUICK_GATHER_ROWS if args.quick else MAX_GATHER_ROWS)
            gather_tables[shape.dim] = (torch.randn(num_rows, shape.dim, device=device),
                                        torch.zeros(num_rows, shape.dim, device=device))
        table, grad = gather_tables[shape.dim]
        row = {"shape": shape.name, "D": shape.dim, "rank": rank, "B": batch, "ids": kind,
               "U12": int(torch.unique(ids // shape.tt_p_shapes[2]).numel())}
        for backward, tag in ((False, "fwd"), (True, "fwd+bwd")):
            floor_s = (2 if backward else 1) * batch * shape.dim * 4 / bandwidth
            for method in methods:
                run = (gather_runner(table, grad, ids, backward) if method == "gather"
                       else tt_runner(lookups[method], ids, cores, shape, backward))
                try:
                    ms = time_ms(run, args.reps, device)
                except torch.OutOfMemoryError:  # one method's failure must not lose the table
                    ms = math.nan
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                row[f"{tag} {method} ns"] = ms * 1e6 / batch
                if method == methods[0]:  # the kernel under test: triton (torch in --quick)
                    row[f"{tag} {method} floor"] = floor_s / (ms * 1e-3)
            if "triton" in methods:
                row[f"{tag} triton/gather"] = row[f"{tag} triton ns"] / row[f"{tag} gather ns"]
        row["Mlookups/s fwd+bwd"] = 1e3 / row[f"fwd+bwd {methods[0]} ns"]
        rows.append(row)
        # One line per case as it completes: a run cut short still shows what it measured.
        tqdm.write(f"{shape.name} R{rank} B={batch} {kind}: fwd+bwd ns/lookup "
                   + ", ".join(f"{m} {row[f'fwd+bwd {m} ns']:.3g}" for m in methods))
    targets = [r for r in rows if r["shape"] == "target" and r["B"] == 1_000_000]
    extra = {"device": str(device), "copy_bandwidth_GBps": bandwidth / 1e9, "checks": checks,
             "quick": args.quick,
             "gather_max_rows": QUICK_GATHER_ROWS if args.quick else MAX_GATHER_ROWS,
             "local_ids": f"{LOCAL_WINDOWS} windows of {LOCAL_PREFIXES_PER_WINDOW}*p3 rows"}
    if targets:
        extra["target"] = {"goal_ns_per_lookup": TARGET_NS,
                           "goal_ratio_to_gather": TARGET_RATIO,
                           "measured": [{k: r[k] for k in ("ids", "fwd+bwd triton ns",
                                                           "fwd+bwd triton/gather")}
                                        for r in targets]}
    report("kernels", rows, args.output, extra)
    for r in targets:
        ok = r["fwd+bwd triton ns"] <= TARGET_NS and r["fwd+bwd triton/gather"] <= TARGET_RATIO
        print(f"target rank 32, D = 64, B = 1e6, {r['ids']} ids: fwd+bwd "
              f"{r['fwd+bwd triton ns']:.2f} ns/lookup (goal <= {TARGET_NS:g}), "
              f"{r['fwd+bwd triton/gather']:.2f}x gather (goal <= {TARGET_RATIO:g}): "
              f"{'met' if ok else 'NOT met'}")
    return 0
