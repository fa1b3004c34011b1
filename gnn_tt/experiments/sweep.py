r"""Partition-granularity sweeps: ``gnn-tt sweep`` trains a grid of TT ranks x partition
counts (plus a full-table baseline) and renders the test accuracy of every cell as a
rank x parts table and plot.

Example::

    gnn-tt sweep --config launch/configs/products_gat.yaml --ranks 8,16,32 \
        --partitions 0,4,16,256,800,1600,3200 --method metis-flat --runs 3 --output runs/sweep

Each cell trains with :func:`gnn_tt.training.train.run` in its own directory ``OUTPUT/cells/NAME``;
a cell whose ``summary.json`` exists beside a ``config.json`` matching the cell's config is
skipped, so an interrupted sweep resumes where it stopped. A cell begun under the same training
config continues from its checkpoint (``resume``); a directory holding another config's run
is replaced (``overwrite``). With ``--overwrite`` every cell is trained again from scratch;
``--resume`` changes nothing (the sweep always resumes). All cells share the base config's
partition cache directory (``--cache-dir``), so each row assignment is computed once. A
failing cell is recorded with its error and the sweep goes on. After
every cell, rank 0 rewrites ``sweep.json`` (every run), ``sweep.csv``, ``sweep.md`` and
``sweep.png`` (rendered by :mod:`gnn_tt.experiments.report`).

The columns are positions on the ``parts`` axis (:mod:`gnn_tt.experiments.parts`): ``0`` is
the dataset's original order, otherwise the ``k`` of ``metis-flat`` or the ``p1`` top-level
parts of ``hierarchical``, whose row factors give each top-level part ``slack`` times the rows
its share of the nodes needs.

Under ``torchrun`` every rank runs every cell (the training is data parallel); rank 0 decides
which cells are cached and the ranks all-reduce a failure flag after each cell, so all ranks
skip, record and continue together.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from gnn_tt.common import distributed
from gnn_tt.embedding.tt_shapes import PARTITION_ROWS
from gnn_tt.experiments.parts import layout_at
from gnn_tt.experiments.report import make_record, sweep_title, write_outputs
from gnn_tt.training.config import (LOCATION_FIELDS, TrainConfig, add_config_args,
                                    config_from_args, load_yaml)
from gnn_tt.training.summary import TrainSummary
from partition import PARTITIONING_METHODS

# Trains one cell: the job's summary, or (stand-ins in tests) its summary.json content.
Runner = Callable[[TrainConfig], "TrainSummary | dict[str, Any]"]


@dataclass
class SweepConfig:
    r"""The grid of a sweep; the training configuration of every cell is the base
    :class:`~gnn_tt.training.config.TrainConfig` with the cell's rank and partition substituted.

    Args:
        ranks (tuple[int, ...]): TT ranks, one table row each.
        partitions (tuple[int, ...]): positions on the parts axis, one table column each
            (``0`` = original order; see :mod:`gnn_tt.experiments.parts`).
        method (str, optional): one of :data:`partition.PARTITIONING_METHODS`.
            (default: ``"metis-flat"``)
        full (bool, optional): also train the full-table baseline row. (default: ``True``)
        slack (float, optional): row capacity over ``num_nodes`` for the ``hierarchical``
            ``tt_p_shapes``. (default: the ``row_slack`` of
            :data:`~gnn_tt.embedding.tt_shapes.PARTITION_ROWS`)
    """
    ranks: tuple[int, ...]
    partitions: tuple[int, ...]
    method: str = "metis-flat"
    full: bool = True
    slack: float = PARTITION_ROWS.row_slack

    def __post_init__(self) -> None:
        self.ranks, self.partitions = tuple(self.ranks), tuple(self.partitions)
        for name, values, low in (("ranks", self.ranks, 1), ("partitions", self.partitions, 0)):
            if not values:
                raise ValueError(f"SweepConfig: '{name}' must not be empty")
            bad = [v for v in values if not isinstance(v, int) or v < low]
            if bad:
                raise ValueError(f"SweepConfig: '{name}' must be integers >= {low}, got {bad}")
            if len(set(values)) != len(values):
                raise ValueError(f"SweepConfig: '{name}' has duplicates: {list(values)}")
        if self.method not in PARTITIONING_METHODS:
            raise ValueError(f"SweepConfig: unknown method {self.method!r}; "
                             f"valid methods: {', '.join(PARTITIONING_METHODS)}")
        if not self.slack >= 1.0:
            raise ValueError(f"SweepConfig: 'slack' must be >= 1, got {self.slack}")


@dataclass
class Cell:
    """One trained configuration of the grid: its name (and subdirectory) and config."""
    name: str
    config: TrainConfig
    tt_rank: int | None = None
    parts: int | None = None


def build_cells(sweep: SweepConfig, base: TrainConfig, num_nodes: int) -> list[Cell]:
    """The cells of the grid (rank-major, parts in the given order), then the full table."""
    too_many = [k for k in sweep.partitions if k > num_nodes]
    if too_many:
        raise ValueError(f"--partitions {too_many} exceed the number of nodes "
                         f"({num_nodes}) of dataset {base.dataset!r}")
    root = Path(base.output)
    policy = dataclasses.replace(PARTITION_ROWS, row_slack=sweep.slack)
    cells = []
    for rank in sweep.ranks:
        for parts in sweep.partitions:
            changes = layout_at(sweep.method, parts, base, num_nodes, policy)
            name = f"tt-r{rank}-{changes['partition']}" + (f"-p{parts}" if parts else "")
            config = dataclasses.replace(base, emb="tt", tt_rank=rank,
                                         output=str(root / "cells" / name), **changes)
            cells.append(Cell(name, config, rank, parts))
    if sweep.full:
        # The row order does not change a full table: train it once, in the original order.
        config = dataclasses.replace(base, emb="full", partition="original", num_parts=None,
                                     output=str(root / "cells" / "full"))
        cells.append(Cell("full", config))
    return cells


def _normalized(d: dict[str, Any]) -> dict[str, Any]:
    """JSON round trip (tuples -> lists), minus the fields that change no result."""
    return {k: v for k, v in json.loads(json.dumps(d, default=str)).items()
            if k not in LOCATION_FIELDS}


def cached_summary(cell: Cell) -> dict[str, Any] | None:
    """The summary of a finished cell whose ``config.json`` matches, else ``None``.

    Fields the cell leaves ``None`` (derived by the training job, e.g. ``tt_p_shapes``)
    match any stored value.
    """
    out = Path(cell.config.output)
    if not (out / "summary.json").is_file() or not (out / "config.json").is_file():
        return None
    want = _normalized(cell.config.to_dict())
    have = _normalized(json.loads((out / "config.json").read_text()))
    diff = sorted(k for k, v in want.items() if v is not None and have.get(k) != v)
    if diff:
        print(f"sweep: {cell.name}: config.json differs in {diff}; not cached",
              file=sys.stderr)
        return None
    return json.loads((out / "summary.json").read_text())


def resumable(cell: Cell) -> bool:
    """Whether the cell's directory holds a run begun under the cell's training config (its
    ``config.json`` differs at most in fields a checkpoint resumes under), which the cell then
    continues; else the directory is empty or holds another config's run, which it replaces."""
    path = Path(cell.config.output) / "config.json"
    if not path.is_file():
        return False
    try:
        saved = TrainConfig.from_dict(json.loads(path.read_text()))
    except ValueError:  # unreadable, or written by another version of TrainConfig
        return False
    return not cell.config.differing_fields(saved)


def _max_over_ranks(value: int, device: torch.device) -> int:
    """Max of an int over the ranks (the value itself in a single process)."""
    t = torch.tensor([value], dtype=torch.int64, device=device)
    return int(distributed.all_reduce_max(t).item())


def _run_cell(cell: Cell, runner: Runner, device: torch.device, main_rank: bool
              ) -> tuple[str, str | None, dict[str, Any] | None]:
    """Skip (cached), train (ok) or record the failure of one cell, the same on every rank.

    Returns:
        ``(status, error, summary)``; ``summary`` is ``None`` for a failed cell.
    """
    # Rank 0 alone may see the files (nodes need not share a file system): its decision.
    summary, resume = None, False
    if main_rank and not cell.config.overwrite:
        summary = cached_summary(cell)
        resume = summary is None and resumable(cell)
    if _max_over_ranks(int(summary is not None), device):
        return "cached", None, summary
    resume = bool(_max_over_ranks(int(resume), device))
    if main_rank:
        if resume:
            print(f"sweep: {cell.name}: continuing its run", file=sys.stderr)
        # A summary.json here belongs to another config (or fewer runs): gone, so an
        # interrupted run of this one is never mistaken for finished.
        (Path(cell.config.output) / "summary.json").unlink(missing_ok=True)
    error = None
    try:
        summary = runner(dataclasses.replace(cell.config, resume=resume, overwrite=not resume))
    except Exception as e:  # a failed cell is a result: record it and go on
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    # Every rank must learn of a failure on any rank, or they would disagree on what follows.
    if _max_over_ranks(int(error is not None), device):
        return "failed", error or "failed on another rank", None
    return "ok", None, summary


def run_sweep(sweep: SweepConfig, base: TrainConfig, num_nodes: int,
              runner: Runner | None = None, device: torch.device | None = None
              ) -> list[dict[str, Any]]:
    r"""Train every cell not cached yet and write the sweep outputs (rank 0).

    Args:
        sweep (SweepConfig): the grid.
        base (TrainConfig): the configuration every cell starts from; ``base.output`` is the
            sweep directory.
        num_nodes (int): nodes of ``base.dataset`` (validates ``partitions``, sizes the
            ``hierarchical`` row factors).
        runner (callable, optional): ``runner(config) -> summary`` trains one cell.
            (default: :func:`gnn_tt.training.train.run`)
        device (torch.device, optional): this rank's device; it picks the process group's
            backend and holds the flags the ranks exchange. (default: ``base.device`` resolved
            by :func:`gnn_tt.training.train.resolve_device`)

    Returns:
        the records of every cell (see :mod:`gnn_tt.experiments.report`); on ranks other than 0, an
        empty list.
    """
    if runner is None or device is None:
        from gnn_tt.training import train  # imported here: torch_geometric takes seconds to load
        runner = runner or train.run
        device = device or train.resolve_device(base.device)
    cells = build_cells(sweep, base, num_nodes)
    # The ranks exchange flags before the first cell trains: the group must exist now.
    owned = distributed.init_from_env(device)
    main_rank = distributed.is_main()
    root = Path(base.output)
    extra = {"sweep": dataclasses.asdict(sweep), "base": base.to_dict(), "num_nodes": num_nodes}
    title = sweep_title(extra)
    records: list[dict[str, Any]] = []
    try:
        bar = tqdm(cells, desc="sweep", unit="cell",
                   disable=not main_rank or not sys.stderr.isatty())
        for cell in bar:
            bar.set_postfix_str(cell.name)
            status, error, summary = _run_cell(cell, runner, device, main_rank)
            if not main_rank:
                continue
            records.append(make_record(cell.name, cell.config.to_dict(), summary, status, error,
                                       os.path.relpath(cell.config.output, root)))
            write_outputs(root, "sweep", title, records, extra)
            acc = records[-1]["test_acc"]
            tqdm.write(f"sweep: {cell.name}: " + (
                f"failed ({error})" if status == "failed"
                else f"test {acc['mean']:.4f} ± {acc['std']:.4f} ({status})"))
    finally:
        distributed.cleanup(owned)
    return records


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    """``"8,16,32"`` -> ``(8, 16, 32)``; a clear error naming ``flag`` otherwise."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"{flag} must list at least one integer, got {text!r}")
    try:
        return tuple(int(s) for s in items)
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnn-tt sweep",
        description="Train a grid of TT ranks x partition counts plus a full-table row; every "
                    "'gnn-tt train' flag sets the base configuration (--output is the sweep "
                    "directory).")
    group = parser.add_argument_group("sweep")
    group.add_argument("--ranks", default="8,16,32",
                       help="TT ranks, the rows of the table (default: 8,16,32)")
    group.add_argument("--partitions", default="0,4,16,256,800,1600,3200",
                       help="parts, the columns: 0 = original order, else k (metis-flat) or p1 "
                            "(hierarchical) (default: 0,4,16,256,800,1600,3200)")
    group.add_argument("--method", default=SweepConfig.method,
                       help=f"{' | '.join(PARTITIONING_METHODS)} (default: "
                            f"{SweepConfig.method})")
    group.add_argument("--no-full", action="store_true", help="skip the full-table row")
    group.add_argument("--slack", type=float, default=SweepConfig.slack,
                       help=f"hierarchical: row capacity over num_nodes (default: "
                            f"{SweepConfig.slack})")
    add_config_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sweep = SweepConfig(ranks=parse_int_list(args.ranks, "--ranks"),
                            partitions=parse_int_list(args.partitions, "--partitions"),
                            method=args.method, full=not args.no_full, slack=args.slack)
        base = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    if "output" not in vars(args) and not (args.config and "output" in load_yaml(args.config)):
        # TrainConfig's derived output names one run; a sweep gets its own directory.
        base = dataclasses.replace(base, output=os.path.join(
            "runs", f"sweep-{sweep.method}-{base.training_hash()}"))
    from gnn_tt.data import load_dataset
    from gnn_tt.training.train import resolve_device
    try:
        device = resolve_device(base.device)
        num_nodes = int(load_dataset(base.dataset, base.root).num_nodes)
        build_cells(sweep, base, num_nodes)  # the grid fits the graph, before any cell trains
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"gnn-tt sweep: error: {e}", file=sys.stderr)
        return 2
    records = run_sweep(sweep, base, num_nodes, device=device)
    if records:
        print((Path(base.output) / "sweep.md").read_text())
    return 1 if any(r["status"] == "failed" for r in records) else 0
