"""``gnn-tt bench data``: first and second load of datasets through the dataset cache.

Each load runs in a fresh subprocess against a fresh cache folder, so its peak RSS is the
load's own: the first builds the dataset (for ``synthetic-products``, generates it) and
writes the entry; each later one maps the entry (``--reps`` times, the median reported)
under ``verify="auto"`` (the full crc32 up to 2 GiB) and once more under ``"sample"``.
``second_s`` times the ``load_dataset`` call alone, ``second_process_s`` the whole process
(Python start and imports included); the ``cpu_s`` columns are the call's CPU time (all
threads), which on a machine shared with other jobs is steadier than the wall clock. The
page cache is warm for the second loads (the entry was just written); a cold read adds the
disk's time for the entry's bytes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from gnn_tt.bench.output import report


def _load(dataset: str, cache_dir: str, verify: str, out: Path) -> None:
    """Worker: one ``load_dataset`` call; writes seconds, peak RSS and sizes to ``out``."""
    from gnn_tt.common.io import atomic_write_json
    from gnn_tt.common.memory import peak_rss_bytes
    from gnn_tt.data import load_dataset

    cpu, start = time.process_time(), time.perf_counter()
    ds = load_dataset(dataset, cache_dir=cache_dir, verify=verify)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    atomic_write_json(out, {"seconds": seconds, "cpu_seconds": cpu,
                            "peak_rss": peak_rss_bytes(), "nodes": ds.num_nodes,
                            "directed_edges": ds.graph.num_edges})


def _run_load(dataset: str, cache_dir: str, verify: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gnn_tt_bench_data_") as tmp:
        out = Path(tmp) / "result.json"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gnn_tt.bench.data", "--worker", dataset,
                        cache_dir, verify, str(out)], check=True)
        result = json.loads(out.read_text())
    result["process_seconds"] = time.perf_counter() - start
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnn-tt bench data", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Dataset cache: first load (build + write), second load (map + verify), "
                    "bytes on disk.")
    parser.add_argument("--datasets", nargs="+", default=["synthetic-products"],
                        help="load_dataset names (space-separated: synthetic specs hold "
                             "commas)")
    parser.add_argument("--reps", type=int, default=3, help="second loads per dataset")
    parser.add_argument("--work-dir", default=None,
                        help="parent of the temporary cache folders (default: the system's "
                             "temporary folder)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)  # internal stage
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.worker:
        dataset, cache_dir, verify, out = args.worker
        _load(dataset, cache_dir, verify, Path(out))
        return 0
    if args.reps < 1:
        print(f"gnn-tt bench data: --reps must be >= 1, got {args.reps}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    for dataset in args.datasets:
        with tempfile.TemporaryDirectory(prefix="gnn_tt_cache_", dir=args.work_dir) as cache:
            first = _run_load(dataset, cache, "auto")
            print(f"{dataset}: first load {first['seconds']:.1f} s", flush=True)
            seconds = [_run_load(dataset, cache, "auto") for _ in range(args.reps)]
            sample = _run_load(dataset, cache, "sample")
            disk = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
        second = sorted(seconds, key=lambda r: r["seconds"])[len(seconds) // 2]
        rows.append({
            "dataset": dataset, "nodes": first["nodes"],
            "directed_edges": first["directed_edges"],
            "first_s": first["seconds"], "first_cpu_s": first["cpu_seconds"],
            "first_peak_GB": first["peak_rss"] / 1e9,
            "second_s": statistics.median(r["seconds"] for r in seconds),
            "second_cpu_s": statistics.median(r["cpu_seconds"] for r in seconds),
            "second_process_s": statistics.median(r["process_seconds"] for r in seconds),
            "second_peak_GB": second["peak_rss"] / 1e9,
            "second_sample_s": sample["seconds"],
            "disk_MB": disk / 1e6, "disk_B_per_edge": disk / max(first["directed_edges"], 1)})
    report("data", rows, args.output, extra={"reps": args.reps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
