"""The ``gnn-tt`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module with a ``main(argv) -> int`` function; this file only
dispatches, importing the module lazily so ``gnn-tt --help`` stays fast.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("gnn_tt.training.train", "train GAT/GraphSAGE with TT (or full-table) node embeddings"),
    "sweep": ("gnn_tt.experiments.sweep", "grid of TT ranks x partition counts, cached and resumable"),
    "report": ("gnn_tt.experiments.report", "tables and plots from finished runs and sweeps"),
    "partition": ("partition.cli", "compute and cache a partition-aware row assignment"),
    "bench": ("gnn_tt.bench", "benchmarks: embedding | kernels | sampler | partition | train"),
}


def _usage() -> str:
    lines = ["usage: gnn-tt <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'gnn-tt <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        # A bare `gnn-tt` only prints help: typed by accident it must not start (or overwrite)
        # a run. Exit status 2 (no command given), as argparse does for a missing argument.
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gnn-tt: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
