"""``gnn-tt bench partition``: the digit-aligned row assignments (``hierarchical``,
``multilevel``) on synthetic graphs of growing size.

Each size is generated once in a fresh subprocess (:func:`gnn_tt.data.synthetic.synthetic_graph`,
CSR saved to disk), and every method partitions it in a fresh subprocess of its own, so the
reported peak RSS is the partitioner's own (graph included), not the generator's or another
method's. ``seconds`` is the wall time of the assignment itself; ``cpu_seconds`` the CPU time
of the whole ``assign_rows`` call (assignment and statistics), which is what the
single-threaded partitioner costs on a machine shared with other jobs. ``B_per_edge`` is the
peak RSS per stored (directed) edge, ``extra_B_per_edge`` the part of it beyond the loaded
graph (the partitioner's own). ``i1_vs_h`` and ``i12_vs_h`` divide a method's ``share_i1`` and
``share_i12`` by those of ``hierarchical`` on the same graph, when it ran.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gnn_tt.bench.output import report
from gnn_tt.embedding.tt_shapes import PARTITION_ROWS
from partition import HIERARCHY_METHODS

# Named sizes: node count and row factors (products: the reference's p).
PRODUCTS_NODES = 2_449_029
PRODUCTS_P = (125, 140, 140)
_SIZE_NAMES = {"100k": 100_000, "1M": 1_000_000, "products": PRODUCTS_NODES}


def parse_size(text: str) -> tuple[int, tuple[int, ...]]:
    """``"100k"``, ``"1M"``, ``"products"`` or a node count -> (nodes, row factors)."""
    if text in _SIZE_NAMES:
        n = _SIZE_NAMES[text]
    else:
        try:
            n = int(text)
        except ValueError:
            raise ValueError(f"--sizes: unknown size {text!r}; use a node count or one of "
                             f"{', '.join(_SIZE_NAMES)}") from None
        if n < 2:
            raise ValueError(f"--sizes: a graph needs >= 2 nodes, got {n}")
    if n == PRODUCTS_NODES:
        return n, PRODUCTS_P
    # The other sizes get the row factors `gnn-tt train` chooses for a partition layout.
    return n, PARTITION_ROWS.row_shapes(n)


def _generate(nodes: int, seed: int, out: Path) -> None:
    """Worker: build the synthetic graph and save rowptr / col / y as .npy files in ``out``."""
    from gnn_tt.data.synthetic import synthetic_graph

    ds = synthetic_graph(nodes=nodes, seed=seed)
    np.save(out / "rowptr.npy", ds.graph.rowptr.numpy())
    np.save(out / "col.npy", ds.graph.col.numpy())
    np.save(out / "y.npy", ds.y.numpy())


def _partition(method: str, tt_p_shapes: Sequence[int], seed: int, out: Path) -> None:
    """Worker: load the saved graph, run the assignment, write result-{method}.json."""
    import torch

    from gnn_tt.data.graph import CSRGraph
    from gnn_tt.common.io import atomic_write_json
    from gnn_tt.common.memory import current_rss_bytes, peak_rss_bytes
    from partition import assign_rows

    rowptr = torch.from_numpy(np.load(out / "rowptr.npy"))
    graph = CSRGraph(rowptr, torch.from_numpy(np.load(out / "col.npy")), rowptr.numel() - 1)
    labels = torch.from_numpy(np.load(out / "y.npy"))
    loaded = current_rss_bytes()
    # CPU time beside the wall clock: the partitioner is single-threaded, so on a machine
    # shared with other jobs CPU seconds are what it would take alone.
    cpu0 = time.process_time()
    ra = assign_rows(graph, graph.num_nodes, tt_p_shapes, method=method, seed=seed,
                     labels=labels, progress=sys.stderr.isatty())
    atomic_write_json(out / f"result-{method}.json",
                      {"stats": ra.stats, "peak_rss": peak_rss_bytes(), "loaded_rss": loaded,
                       "num_edges": graph.num_edges, "method": ra.method,
                       "cpu_seconds": time.process_time() - cpu0})


def _run_worker(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "gnn_tt.bench.partition", "--worker", *args],
                   check=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnn-tt bench partition", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Digit-aligned row assignments on synthetic graphs: seconds, peak RSS, "
                    "edge cut, share of edges inside an i1 / (i1, i2) block.")
    parser.add_argument("--sizes", default="100k,1M,products",
                        help="comma-separated node counts or 100k / 1M / products "
                             f"(products = {PRODUCTS_NODES} nodes with p = {PRODUCTS_P}; "
                             "other sizes get the row factors gnn-tt train chooses, "
                             f"with {PARTITION_ROWS.row_slack} rows per node)")
    parser.add_argument("--methods", default="hierarchical,multilevel",
                        help=f"comma-separated, from {', '.join(HIERARCHY_METHODS)}")
    parser.add_argument("--seed", type=int, default=0, help="graph and METIS seed")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)  # internal stages
    return parser


def _row(nodes: int, p: Sequence[int], result: dict[str, Any]) -> dict[str, Any]:
    """One table row from a worker's result."""
    stats, edges = result["stats"], result["num_edges"]
    return {"nodes": nodes, "method": result["method"], "edges": stats["num_edges"],
            "p": "x".join(map(str, p)), "seconds": stats["seconds"],
            "cpu_seconds": result["cpu_seconds"], "peak_rss_GB": result["peak_rss"] / 1e9,
            "B_per_edge": result["peak_rss"] / edges,
            "extra_B_per_edge": (result["peak_rss"] - result["loaded_rss"]) / edges,
            "moved": stats["moved"], "cut_i1": stats["edge_cut"][0],
            "share_i1": stats["share_i1"], "share_i12": stats["share_i12"],
            "purity_i1": stats["purity_i1"]}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.worker:
        stage, out = args.worker[0], Path(args.worker[1])
        if stage == "generate":
            _generate(int(args.worker[2]), args.seed, out)
        else:
            _partition(args.worker[3], [int(x) for x in args.worker[2].split(",")], args.seed,
                       out)
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        sizes = [parse_size(s.strip()) for s in args.sizes.split(",") if s.strip()]
        bad = [m for m in methods if m not in HIERARCHY_METHODS]
        if bad or not methods:
            raise ValueError(f"--methods: unknown method(s) {', '.join(bad) or '(none)'}; "
                             f"use {', '.join(HIERARCHY_METHODS)}")
    except ValueError as err:
        print(f"gnn-tt bench partition: {err}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    for nodes, p in sizes:
        with tempfile.TemporaryDirectory(prefix="gnn_tt_bench_partition_") as tmp:
            _run_worker(["generate", tmp, str(nodes), f"--seed={args.seed}"])
            size_rows = []
            for method in methods:
                _run_worker(["partition", tmp, ",".join(map(str, p)), method,
                             f"--seed={args.seed}"])
                result = json.loads((Path(tmp) / f"result-{method}.json").read_text())
                size_rows.append(_row(nodes, p, result))
                print(f"{nodes} nodes, {result['method']}: {result['stats']['seconds']:.1f} s, "
                      f"peak RSS {result['peak_rss'] / 1e9:.2f} GB", flush=True)
        base = next((r for r in size_rows if r["method"] == "hierarchical"), None)
        for row in size_rows:
            if base is not None:
                row["i1_vs_h"] = row["share_i1"] / base["share_i1"]
                row["i12_vs_h"] = row["share_i12"] / base["share_i12"]
        rows.extend(size_rows)
    report("partition", rows, args.output,
           extra={"methods": methods, "seed": args.seed,
                  "graph": "gnn_tt.data.synthetic.synthetic_graph(nodes=N)"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
