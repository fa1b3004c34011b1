r"""Tables and plots from finished runs and sweeps: ``gnn-tt report DIR...``.

One implementation serves both ``gnn-tt sweep`` (which writes ``sweep.md`` / ``sweep.png`` /
``sweep.csv`` after every cell) and ``gnn-tt report`` (which re-renders them from directories).
Everything here works on *records*: one flat dict per trained configuration (a sweep cell or a
``gnn-tt train`` output directory)::

    {"name": "tt-r8-p16", "status": "ok" | "cached" | "failed", "error": None | str,
     "dataset": ..., "model": ..., "emb": "tt", "tt_rank": 8,
     "partition": "metis-flat", "parts": 16, "output": "cells/tt-r8-metis-flat-p16",
     "tt_p_shapes": [...],
     "test_acc": {"mean", "std", "runs"}, "val_acc": {...}, "embedding_parameters": ...,
     "compression_ratio": ..., "epoch_seconds": ...}

``parts`` is the record's position on the partition-granularity axis, the columns of the
rank x parts table (:mod:`gnn_tt.experiments.parts`); ``None`` for records off that axis (no
TT table, or an order that cuts nothing).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterable, Sequence

from gnn_tt.common.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from gnn_tt.embedding.node_input import kind_parts
from gnn_tt.experiments.parts import parts_of
from gnn_tt.training.summary import TrainSummary

STATUSES = ("ok", "cached", "failed")
# Columns of sweep.csv / report.csv: one row per training run (seed) of every record.
RUN_COLUMNS = ("name", "status", "dataset", "model", "emb", "tt_rank", "partition", "parts",
               "run", "test_acc", "val_acc", "embedding_parameters", "compression_ratio",
               "epoch_seconds", "output", "error")


def make_record(name: str, config: dict[str, Any],
                summary: TrainSummary | dict[str, Any] | None, status: str = "ok",
                error: str | None = None, output: str | None = None) -> dict[str, Any]:
    r"""Flatten one run's config and summary into a record.

    Args:
        name (str): label of the row (a sweep cell name or a run directory name).
        config (dict): the training config (``TrainConfig.to_dict()``).
        summary (TrainSummary or dict, optional): the run's summary, as
            :func:`gnn_tt.training.train.run` returns it or as its ``summary.json`` holds it
            (read with :meth:`TrainSummary.from_dict`); ``None`` for a failed cell.
        status (str, optional): ``"ok"``, ``"cached"`` or ``"failed"``. (default: ``"ok"``)
        error (str, optional): the error of a failed cell. (default: ``None``)
        output (str, optional): the run's output directory. (default: ``None``)
    """
    if status not in STATUSES:
        raise ValueError(f"make_record: status must be one of {STATUSES}, got {status!r}")
    if status != "failed" and summary is None:
        raise ValueError(f"make_record: record {name!r} has status {status!r} but no summary")
    if isinstance(summary, dict):
        summary = TrainSummary.from_dict(summary)
    emb = config.get("emb")
    # The row factors actually used: the job's (derived when the config has none; none for
    # an input other than TT), else, for a failed job or a summary without them, the config's.
    p_shapes = config.get("tt_p_shapes")
    has_tt = emb is not None and "tt" in kind_parts(emb)
    if summary is not None and (summary.tt_p_shapes is not None or not has_tt):
        p_shapes = summary.tt_p_shapes
    return {
        "name": name, "status": status, "error": error,
        "dataset": config.get("dataset"), "model": config.get("model"), "emb": emb,
        # A full table or fixed features have no TT rank; keep the row key None for them.
        "tt_rank": config.get("tt_rank") if has_tt else None,
        "partition": config.get("partition"),
        "parts": parts_of(config, p_shapes) if has_tt else None,
        "output": output, "tt_p_shapes": p_shapes,
        "test_acc": summary and summary.test_acc.to_dict(),
        "val_acc": summary and summary.val_acc.to_dict(),
        "embedding_parameters": summary and summary.embedding_parameters,
        "compression_ratio": summary and summary.compression_ratio,
        "epoch_seconds": summary and summary.epoch_seconds,
    }


def _read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a ValueError names the file when it holds anything else."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def load_run_dir(path: str | Path) -> dict[str, Any]:
    """Record of a finished ``gnn-tt train`` output directory (``config.json`` +
    ``summary.json``).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is not what training writes (naming it).
    """
    path = Path(path)
    for file in ("config.json", "summary.json"):
        if not (path / file).is_file():
            raise FileNotFoundError(f"run directory {str(path)!r} has no {file}")
    config = _read_json_object(path / "config.json")
    data = _read_json_object(path / "summary.json")
    try:
        summary = TrainSummary.from_dict(data)
    except (KeyError, TypeError) as err:  # a field of the wrong type or shape
        raise ValueError(f"{str(path / 'summary.json')!r} is not a training summary "
                         f"({type(err).__name__}: {err})") from None
    except ValueError as err:
        raise ValueError(f"{str(path / 'summary.json')!r}: {err}") from None
    return make_record(path.name, config, summary, output=str(path))


def _check_sweep(path: Path, data: dict[str, Any]) -> None:
    """Raise a ValueError naming ``path`` unless ``data`` has what :func:`sweep_title` and
    the renderers read: ``sweep.method``, ``base`` and ``cells``, records with every key of
    :func:`make_record`'s."""
    keys = make_record("", {}, None, status="failed")  # every key of a record
    problem = None
    if not isinstance(data.get("sweep"), dict) or "method" not in data["sweep"]:
        problem = "no 'sweep' object with a 'method'"
    elif not isinstance(data.get("base"), dict):
        problem = "no 'base' config"
    elif not isinstance(data.get("cells"), list):
        problem = "no 'cells' list"
    else:
        for i, cell in enumerate(data["cells"]):
            missing = [k for k in keys if k not in cell] if isinstance(cell, dict) else None
            if missing is None or missing or cell["status"] not in STATUSES:
                problem = f"cell {i} is not a sweep record" + (
                    f" (missing {missing})" if missing else "")
                break
    if problem:
        raise ValueError(f"{str(path)!r} is not a sweep's sweep.json: {problem}")


def load_dir(path: str | Path) -> tuple[str, list[dict[str, Any]], bool]:
    """Records of a sweep directory (``sweep.json``) or of one run directory.

    Returns:
        ``(title, records, is_sweep)``.

    Raises:
        FileNotFoundError: ``path`` does not exist, or is neither kind of directory.
        ValueError: its files are not what a sweep or training writes (naming the file).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} " + (
            "is not a directory" if path.exists() else "does not exist"))
    if (path / "sweep.json").is_file():
        data = _read_json_object(path / "sweep.json")
        _check_sweep(path / "sweep.json", data)
        return sweep_title(data), list(data["cells"]), True
    if (path / "summary.json").is_file():
        return path.name, [load_run_dir(path)], False
    raise FileNotFoundError(
        f"{str(path)!r} is neither a sweep directory (sweep.json) nor a run directory "
        "(config.json + summary.json)" + ("; it is empty" if not any(path.iterdir()) else ""))


def sweep_title(data: dict[str, Any]) -> str:
    """One-line title of a sweep from its ``sweep.json`` content."""
    base, sweep = data["base"], data["sweep"]
    return (f"{base.get('dataset')} / {base.get('model')} / {sweep['method']}: test accuracy "
            f"by TT rank and parts ({base.get('runs')} runs, {base.get('epochs')} epochs)")


def _mean_std(acc: dict[str, Any] | None) -> str:
    if not acc:
        return "-"
    return f"{acc['mean']:.4f} ± {acc['std']:.4f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}x" if x >= 10 else f"{x:,.2f}x"


def _column_key(record: dict[str, Any], methods: set[str]) -> str:
    """Column label: the parts value, prefixed by the method when several are mixed."""
    if record["parts"] == 0 or len(methods) <= 1:
        return str(record["parts"])
    return f"{record['partition']} {record['parts']}"


def _markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _grid(records: Sequence[dict[str, Any]]
          ) -> tuple[list[dict[str, Any]], list[str], set[str]]:
    """The records on the rank x parts grid: (tt records, column keys in axis order, methods)."""
    tt = [r for r in records if r["emb"] == "tt" and r["parts"] is not None]
    methods = {r["partition"] for r in tt if r["parts"] != 0}
    order = sorted({(r["parts"], _column_key(r, methods)) for r in tt},
                   key=lambda pc: (pc[0], pc[1]))
    return tt, [c for _, c in order], methods


def sweep_table(records: Sequence[dict[str, Any]]) -> str:
    r"""The rank x parts table as markdown: rows = TT rank, columns = parts, cells = test
    accuracy mean ± std (``failed`` for a failed cell), last column the parameter reduction
    versus a full table (a range when it varies with parts, as for ``hierarchical`` whose
    ``tt_p_shapes`` depend on ``p1``), then one row per full-table record.
    """
    tt, columns, methods = _grid(records)
    full = [r for r in records if r["emb"] == "full"]
    header = ["rank \\ parts", *columns, "reduction vs full"]
    rows = []
    for rank in sorted({r["tt_rank"] for r in tt}):
        cells = {_column_key(r, methods): r for r in tt if r["tt_rank"] == rank}
        ratios = [r["compression_ratio"] for r in cells.values() if r["compression_ratio"]]
        lo, hi = (min(ratios), max(ratios)) if ratios else (None, None)
        reduction = _ratio(lo) if lo is None or math.isclose(lo, hi, rel_tol=1e-3) \
            else f"{_ratio(lo)} - {_ratio(hi)}"
        row = ["failed" if c in cells and cells[c]["status"] == "failed"
               else _mean_std(cells[c]["test_acc"]) if c in cells else "-" for c in columns]
        rows.append([f"TT rank {rank}", *row, reduction])
    for r in full:
        # The full table does not depend on the row order: one value, under the first column.
        value = "failed" if r["status"] == "failed" else _mean_std(r["test_acc"])
        rows.append(["full table", value, *["-"] * (len(columns) - 1), "1x"])
    return _markdown(header, rows)


def leaderboard(records: Sequence[dict[str, Any]]) -> str:
    """Leaderboard-style summary (OGB protocol): one row per record, best test mean first:
    test and validation accuracy mean ± std, number of runs, embedding parameters and the
    reduction versus a full table."""
    ok = sorted((r for r in records if r["status"] != "failed"),
                key=lambda r: -r["test_acc"]["mean"])
    header = ["name", "dataset", "model", "embedding", "test acc", "val acc", "runs",
              "parameters", "reduction"]
    rows = []
    for r in ok:
        emb = r["emb"] if r["tt_rank"] is None else f"{r['emb']} r{r['tt_rank']} {r['partition']}" + (
            f" {r['parts']}" if r["parts"] else "")
        params = r["embedding_parameters"]
        rows.append([r["name"], str(r["dataset"]), str(r["model"]), emb,
                     _mean_std(r["test_acc"]), _mean_std(r["val_acc"]),
                     str(len(r["test_acc"]["runs"])),
                     "-" if params is None else f"{params:,}", _ratio(r["compression_ratio"])])
    return _markdown(header, rows)


def failures(records: Sequence[dict[str, Any]]) -> str:
    """Markdown bullet list of failed records and their errors ('' when none failed)."""
    return "\n".join(f"- `{r['name']}`: {r['error']}" for r in records
                     if r["status"] == "failed")


def render_markdown(title: str, records: Sequence[dict[str, Any]]) -> str:
    """Title, grid table (when any TT record lies on the parts axis), leaderboard, failures."""
    parts = [f"## {title}", ""]
    if _grid(records)[0]:
        parts += [sweep_table(records), ""]
    parts += ["Leaderboard (test and validation accuracy, mean ± std over runs):", "",
              leaderboard(records), ""]
    failed = failures(records)
    if failed:
        parts += ["Failed cells:", "", failed, ""]
    return "\n".join(parts)


def run_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per training run (seed) of every record, a failed record giving one row with
    its error: the rows of ``sweep.csv``."""
    rows = []
    for r in records:
        base = {c: r.get(c) for c in RUN_COLUMNS if c in r}
        if r["status"] == "failed":
            rows.append({**base, "run": None, "test_acc": None, "val_acc": None})
            continue
        for i, (test, val) in enumerate(zip(r["test_acc"]["runs"], r["val_acc"]["runs"])):
            rows.append({**base, "run": i, "test_acc": test, "val_acc": val})
    return rows


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` (columns ``RUN_COLUMNS``) as CSV, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RUN_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: ("" if row.get(c) is None else row.get(c)) for c in RUN_COLUMNS}
                     for row in rows)
    return atomic_write_text(path, buf.getvalue())


def plot_sweep(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Write :func:`sweep_png` of ``records`` to ``path``, atomically."""
    return atomic_write_bytes(path, sweep_png(records, title))


def sweep_png(records: Sequence[dict[str, Any]], title: str = "") -> bytes:
    r"""Accuracy versus parts: one line per TT rank with mean ± std error bars, the full table
    as a horizontal line with its ± std band. Parts are placed at evenly spaced positions
    (the axis 0, 4, 16, ..., 3200 spans orders of magnitude and starts at 0). A PNG
    (matplotlib's Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tt, columns, methods = _grid(records)
    pos = {c: i for i, c in enumerate(columns)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rank in sorted({r["tt_rank"] for r in tt}):
        done = sorted((r for r in tt if r["tt_rank"] == rank and r["status"] != "failed"),
                      key=lambda r: pos[_column_key(r, methods)])
        if done:
            ax.errorbar([pos[_column_key(r, methods)] for r in done],
                        [r["test_acc"]["mean"] for r in done],
                        yerr=[r["test_acc"]["std"] for r in done],
                        marker="o", capsize=3, label=f"TT rank {rank}")
    for r in records:
        if r["emb"] == "full" and r["status"] != "failed":
            mean, std = r["test_acc"]["mean"], r["test_acc"]["std"]
            ax.axhline(mean, color="black", linestyle="--", label="full table")
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.08)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_xlabel("parts (0 = original order)")
    ax.set_ylabel("test accuracy")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)  # long dataset specs
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(output: str | Path, stem: str, title: str,
                  records: Sequence[dict[str, Any]], extra: dict[str, Any]) -> None:
    """Write ``{stem}.json`` (``extra`` + records + every run), ``{stem}.csv``, ``{stem}.md``
    and ``{stem}.png`` into ``output``."""
    output = Path(output)
    rows = run_rows(records)
    atomic_write_json(output / f"{stem}.json", {**extra, "cells": list(records), "runs": rows})
    write_csv(output / f"{stem}.csv", rows)
    atomic_write_text(output / f"{stem}.md", render_markdown(title, records))
    plot_sweep(records, output / f"{stem}.png", title)


def unique_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` without repeats of one training: sweeps of two methods share their
    original-order and full-table cells, which would otherwise appear twice in a combined
    leaderboard. Same configuration descriptors and the same per-run accuracies = same run."""
    seen, out = set(), []
    for r in records:
        accs = [tuple((r[k] or {}).get("runs", ())) for k in ("test_acc", "val_acc")]
        key = (r["dataset"], r["model"], r["emb"], r["tt_rank"], r["partition"], r["parts"],
               tuple(r.get("tt_p_shapes") or ()), r["status"], *accs)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnn-tt report",
        description="Render the rank x parts table, the accuracy plot and a leaderboard from "
                    "finished sweep directories (sweep.json) and run directories "
                    "(config.json + summary.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="sweep or run directories")
    parser.add_argument("--output", default="report",
                        help="directory for report.md/.json/.csv and one PNG per table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI of ``gnn-tt report``. Every directory is read and every output rendered before the
    first file is written, so a bad input writes nothing: it ends in a one-line error and exit
    status 2."""
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    try:
        loaded = [load_dir(d) for d in args.dirs]
    except (OSError, ValueError) as err:
        print(f"gnn-tt report: error: {err}", file=sys.stderr)
        return 2
    sections, everything, loose = [], [], []
    pngs: dict[str, bytes] = {}
    for i, (title, records, is_sweep) in enumerate(loaded):
        everything += records
        if is_sweep:
            sections.append(render_markdown(title, records))
            if _grid(records)[0]:
                pngs[f"sweep{i}.png"] = sweep_png(records, title)
                sections.append(f"![{title}](sweep{i}.png)\n")
        else:
            loose += records
    if loose:
        sections.append(render_markdown("runs", loose))
        if _grid(loose)[0]:
            pngs["runs.png"] = sweep_png(loose, "runs")
            sections.append("![runs](runs.png)\n")
    if len(args.dirs) > 1:
        sections.append("## Leaderboard over all directories\n\n"
                        + leaderboard(unique_records(everything)) + "\n")
    text = "\n".join(sections)
    rows = run_rows(everything)
    for name, png in pngs.items():
        atomic_write_bytes(output / name, png)
    atomic_write_text(output / "report.md", text)
    atomic_write_json(output / "report.json", {"dirs": list(args.dirs), "cells": everything,
                                               "runs": rows})
    write_csv(output / "report.csv", rows)
    print(text)
    print(f"wrote {output / 'report.md'}")
    return 0
