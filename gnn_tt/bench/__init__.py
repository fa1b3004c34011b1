"""Benchmarks (scripts, never tests): ``gnn-tt bench NAME [options]``.

Each benchmark is a module ``gnn_tt.bench.<name>`` with ``main(argv) -> int`` that prints a
table and writes JSON (``--output``).
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

BENCHMARKS = ("embedding", "kernels", "sampler", "partition", "train", "data", "csr")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: gnn-tt bench {{{','.join(BENCHMARKS)}}} [options]")
        return 0 if argv else 2
    if argv[0] not in BENCHMARKS:
        print(f"gnn-tt bench: unknown benchmark {argv[0]!r}; valid: {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    return int(importlib.import_module(f"gnn_tt.bench.{argv[0]}").main(argv[1:]) or 0)
