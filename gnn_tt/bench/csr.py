"""``gnn-tt bench csr``: peak memory and time of the chunked CSR build and of the synthetic
generator, in bytes per directed edge.

Each row runs in a fresh subprocess. A ``csr`` row first puts its input in memory: a random
int64 edge list (``--random NODES:EDGES``, EDGES undirected pairs drawn uniformly), or the
undirected edge list of a synthetic graph (one int64 pair per edge, as ogbn's raw files hold
it). The worker then resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), calls
:meth:`CSRGraph.from_edge_index <gnn_tt.data.graph.CSRGraph.from_edge_index>` (which builds
in chunks), and reports the peak RSS above the RSS before the call: in total and beyond the
output (``rowptr`` + ``col``), per directed edge of the result. A ``generate`` row measures
the whole :func:`~gnn_tt.data.synthetic.synthetic_graph` call the same way (per-node tables,
draws, deduplication, CSR). ``cpu_seconds`` counts all threads; on a machine shared with
other jobs it is steadier than the wall clock.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gnn_tt.bench.output import report

# Directed edges per node range when the generated graph is written out.
_RANGE = 1 << 24


def _status_bytes(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def _measure(build: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Run ``build`` with the peak-RSS mark reset; its peak above the RSS before it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    except OSError as err:
        raise RuntimeError(f"gnn-tt bench csr needs Linux's /proc/self/clear_refs to reset "
                           f"the peak RSS: {err}") from None
    base = _status_bytes("VmRSS")
    cpu, start = time.process_time(), time.perf_counter()
    result = build()
    return result, {"seconds": time.perf_counter() - start,
                    "cpu_seconds": time.process_time() - cpu,
                    "peak_above_start": _status_bytes("VmHWM") - base}


def _synthetic_config(spec: str):
    from gnn_tt.data.synthetic import SyntheticConfig

    return SyntheticConfig() if spec == "products" else SyntheticConfig.from_string(spec)


def _save_upper_edges(csr, path: Path) -> None:
    """The edges ``a < b`` of a symmetric CSR without self-loops (half its entries) as an
    int64 ``[2, E / 2]`` .npy file, written through a memory map one node range at a time."""
    import torch

    rowptr, degree = csr.rowptr, csr.degree()
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64,
                                    shape=(2, csr.num_edges // 2))
    cuts = torch.searchsorted(rowptr, torch.arange(0, csr.num_edges, _RANGE))
    cuts = torch.unique_consecutive(torch.cat([cuts, torch.tensor([csr.num_nodes])])).tolist()
    written = 0
    for v0, v1 in zip([0] + cuts, cuts):
        src = torch.repeat_interleave(torch.arange(v0, v1), degree[v0:v1])
        dst = csr.col[rowptr[v0]:rowptr[v1]].long()
        keep = dst > src
        k = int(keep.sum())
        out[0, written:written + k] = src[keep].numpy()
        out[1, written:written + k] = dst[keep].numpy()
        written += k
    assert written == out.shape[1], "the generated graph is not symmetric"
    out.flush()


def _worker(stage: str, graph: str, tmp: Path) -> None:
    """``generate``: time ``synthetic_graph`` and save its undirected edge list;
    ``csr``: build the CSR of the random graph ``graph`` or of the saved edge list."""
    import torch

    from gnn_tt.common.io import atomic_write_json
    from gnn_tt.data.graph import CSRGraph

    if stage == "generate":
        from gnn_tt.data.synthetic import synthetic_graph

        ds, figures = _measure(lambda: synthetic_graph(_synthetic_config(graph),
                                                       progress=False))
        csr = ds.graph
        _save_upper_edges(csr, tmp / "edges.npy")
    else:
        if graph.startswith("random:"):
            nodes, edges = (int(x) for x in graph[len("random:"):].split(":"))
            edge_index = torch.empty(2, edges, dtype=torch.long)
            edge_index.random_(0, nodes, generator=torch.Generator().manual_seed(0))
        else:
            edge_index = torch.from_numpy(np.load(tmp / "edges.npy"))
            nodes = json.loads((tmp / "generate.json").read_text())["nodes"]
        csr, figures = _measure(lambda: CSRGraph.from_edge_index(edge_index, nodes))
    atomic_write_json(tmp / f"{stage}.json", {**figures, "nodes": csr.num_nodes,
                                              "directed_edges": csr.num_edges,
                                              "output_bytes": csr.memory_bytes()})


def _run(stage: str, graph: str, tmp: str) -> dict[str, Any]:
    subprocess.run([sys.executable, "-m", "gnn_tt.bench.csr", "--worker", stage, graph, tmp],
                   check=True)
    r = json.loads((Path(tmp) / f"{stage}.json").read_text())
    edges = max(r["directed_edges"], 1)
    return {"graph": graph, "stage": stage, "nodes": r["nodes"],
            "directed_edges": r["directed_edges"], "seconds": r["seconds"],
            "cpu_seconds": r["cpu_seconds"], "peak_GB": r["peak_above_start"] / 1e9,
            "output_GB": r["output_bytes"] / 1e9,
            "B_per_edge": r["peak_above_start"] / edges,
            "beyond_output_B_per_edge": (r["peak_above_start"] - r["output_bytes"]) / edges}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnn-tt bench csr", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Chunked CSR build and synthetic generator: seconds, peak RSS above the "
                    "input, bytes per directed edge in total and beyond the output.")
    parser.add_argument("--random", nargs="*", default=["2000000:10000000",
                                                        "2400000:25000000"],
                        metavar="NODES:EDGES",
                        help="random graphs: NODES nodes, EDGES uniform undirected pairs")
    parser.add_argument("--synthetic", nargs="*", default=["nodes=2000000,degree=20"],
                        metavar="SPEC",
                        help="synthetic graphs (SyntheticConfig key=value,... or 'products'): "
                             "a generate row, then a csr row on its edge list")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # stage, graph, folder
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.worker:
        _worker(args.worker[0], args.worker[1], Path(args.worker[2]))
        return 0
    for spec in args.random:
        if not re.fullmatch(r"\d+:\d+", spec):
            print(f"gnn-tt bench csr: --random {spec!r} is not NODES:EDGES (integers)",
                  file=sys.stderr)
            return 2
    for spec in args.synthetic:
        try:
            _synthetic_config(spec)
        except (TypeError, ValueError) as err:
            print(f"gnn-tt bench csr: --synthetic {spec!r}: {err}", file=sys.stderr)
            return 2
    rows: list[dict[str, Any]] = []
    for spec in args.random:
        with tempfile.TemporaryDirectory(prefix="gnn_tt_bench_csr_") as tmp:
            rows.append(_run("csr", f"random:{spec}", tmp))
    for spec in args.synthetic:
        with tempfile.TemporaryDirectory(prefix="gnn_tt_bench_csr_") as tmp:
            rows.append(_run("generate", spec, tmp))
            rows.append(_run("csr", spec, tmp))
    report("csr", rows, args.output,
           extra={"measure": "VmHWM - VmRSS before the call, peak mark reset first"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
