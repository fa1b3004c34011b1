"""``gnn-tt partition``: compute (or load from the cache) a row assignment and print its
quality per level."""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Sequence

from gnn_tt.common.table import format_table
from gnn_tt.common.io import atomic_write_json
from partition.assign import AUTO_MULTILEVEL_EDGES, METHODS, RowAssignment, assign_rows


def _shapes(text: str) -> tuple[int, ...]:
    try:
        shapes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tt-p-shapes must be comma-separated ints, got "
                                         f"{text!r}") from None
    return shapes


def level_rows(ra: RowAssignment) -> list[dict[str, Any]]:
    """One table row per prefix level: the digits it groups by, edges cut, share, purity."""
    rows = []
    for level, (cut, share) in enumerate(zip(ra.stats["edge_cut"], ra.stats["share"])):
        row: dict[str, Any] = {"level": level + 1,
                               "prefix": ",".join(f"i{j + 1}" for j in range(level + 1)),
                               "blocks": math.prod(ra.tt_p_shapes[:level + 1]),
                               "edge_cut": cut, "share": share}
        if "purity" in ra.stats:
            row["purity"] = ra.stats["purity"][level]
        rows.append(row)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnn-tt partition", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Compute a partition-aware node -> TT row assignment, print its quality "
                    "and write it to the cache (where training finds it).")
    parser.add_argument("--dataset", required=True,
                        help="dataset name, as gnn_tt.data.load_dataset takes it "
                             "(e.g. ogbn-products, synthetic-products, npz:PATH)")
    parser.add_argument("--root", default=None, help="directory of downloaded datasets "
                        "(None: $GNN_TT_DATA or ./data)")
    parser.add_argument("--method", default="auto", choices=METHODS,
                        help="row layout method (auto: multilevel above "
                             f"{AUTO_MULTILEVEL_EDGES:,} stored edges, else hierarchical)")
    parser.add_argument("--tt-p-shapes", type=_shapes, required=True,
                        help="row factors p1,p2,...; their product must be >= the node count")
    parser.add_argument("--num-parts", type=int, default=None,
                        help="k of metis-flat (0 = original order)")
    parser.add_argument("--seed", type=int, default=0, help="METIS / permutation seed")
    parser.add_argument("--cache-dir", default=os.path.join(".cache", "partitions"),
                        help="where assignments are cached")
    parser.add_argument("--output", default=None, help="also write the stats here as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from gnn_tt.data import load_dataset  # heavy imports only once the arguments are valid

    ds = load_dataset(args.dataset, args.root)
    ra = assign_rows(ds.graph, ds.num_nodes, args.tt_p_shapes, method=args.method,
                     num_parts=args.num_parts, seed=args.seed, cache_dir=args.cache_dir,
                     labels=ds.y, progress=sys.stderr.isatty())
    moved = f", moved {ra.stats['moved']} nodes" if "moved" in ra.stats else ""
    print(f"{ds.name}: {ra!r}\n{ra.num_nodes} nodes, {ra.stats['num_edges']} edges, "
          f"{ra.stats['seconds']:.1f} s{' (cached)' if ra.stats['cache_hit'] else ''}{moved}")
    print(format_table(level_rows(ra)))
    if args.output:
        atomic_write_json(args.output, {"dataset": ds.name, "method": ra.method,
                                        "tt_p_shapes": list(ra.tt_p_shapes),
                                        "num_parts": ra.num_parts, "seed": ra.seed,
                                        "stats": ra.stats})
    return 0
