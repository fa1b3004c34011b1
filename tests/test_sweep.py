import csv
import dataclasses
import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from gnn_tt.training.config import TrainConfig
from gnn_tt.common.io import atomic_write_json
from gnn_tt.experiments.sweep import SweepConfig, build_cells, main, parse_int_list, run_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUM_NODES = 1000
CPU = torch.device("cpu")


class FakeRunner:
    """Stands in for gnn_tt.training.train.run in the bookkeeping tests: writes config.json and
    summary.json like the real job, with accuracies computed from the cell's config."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[str] = []
        self.configs: list[TrainConfig] = []
        self.fail_on = fail_on

    def __call__(self, config: TrainConfig) -> dict:
        name = Path(config.output).name
        self.calls.append(name)
        self.configs.append(config)
        if name == self.fail_on:
            raise RuntimeError(f"boom in {name}")
        base = 0.5 if config.emb == "full" else 0.6 + config.tt_rank / 100 + (
            config.num_parts or 0) / 1000
        tests = [base + 0.01 * r for r in range(config.runs)]
        mean = sum(tests) / len(tests)
        summary = {"test_acc": {"mean": mean, "std": 0.01, "runs": tests},
                   "val_acc": {"mean": mean - 0.1, "std": 0.02, "runs": [t - 0.1 for t in tests]},
                   "embedding_parameters": 10 * config.tt_rank if config.emb == "tt" else 64000,
                   "compression_ratio": 6400 / config.tt_rank if config.emb == "tt" else 1.0,
                   "epoch_seconds": 0.1}
        atomic_write_json(Path(config.output) / "config.json", config.to_dict())
        atomic_write_json(Path(config.output) / "summary.json", summary)
        return summary


def _base(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(dataset="synthetic:nodes=1000,degree=8,classes=4,seed=0", runs=2,
                       output=str(tmp_path / "sweep"), cache_dir=str(tmp_path / "cache"), **kw)


def test_tiny_sweep_writes_all_outputs(tmp_path):
    runner = FakeRunner()
    sweep = SweepConfig(ranks=(8, 16), partitions=(0, 4))
    records = run_sweep(sweep, _base(tmp_path), NUM_NODES, runner, CPU)
    assert runner.calls == ["tt-r8-original", "tt-r8-metis-flat-p4", "tt-r16-original",
                            "tt-r16-metis-flat-p4", "full"]
    root = tmp_path / "sweep"
    data = json.loads((root / "sweep.json").read_text())
    assert data["sweep"]["ranks"] == [8, 16] and data["num_nodes"] == NUM_NODES
    assert [c["name"] for c in data["cells"]] == runner.calls == [r["name"] for r in records]
    for cell in data["cells"]:
        # Every value in the sweep comes from the cell's own summary.json.
        summary = json.loads((root / cell["output"] / "summary.json").read_text())
        assert cell["test_acc"] == summary["test_acc"] and cell["val_acc"] == summary["val_acc"]
        assert cell["compression_ratio"] == summary["compression_ratio"]
        assert cell["status"] == "ok"
    with open(root / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(data["runs"]) == 5 * 2  # every run of every cell
    cell_tests = {c["name"]: c["test_acc"]["runs"] for c in data["cells"]}
    for row in rows:
        assert math.isclose(float(row["test_acc"]), cell_tests[row["name"]][int(row["run"])])
    md = (root / "sweep.md").read_text()
    r16p4 = next(c for c in data["cells"] if c["name"] == "tt-r16-metis-flat-p4")["test_acc"]
    assert f"| TT rank 16 | 0.7650 ± 0.0100 | {r16p4['mean']:.4f} ± 0.0100 | 400x |" in md
    assert "| full table | 0.5050 ± 0.0100 | - | 1x |" in md
    assert (root / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    # The cells' configs: the grid's rank and partition on the base config.
    cfg = json.loads((root / "cells" / "tt-r16-metis-flat-p4" / "config.json").read_text())
    assert (cfg["tt_rank"], cfg["partition"], cfg["num_parts"], cfg["emb"]) == (
        16, "metis-flat", 4, "tt")
    assert cfg["cache_dir"] == str(tmp_path / "cache")  # one partition cache for all cells


def test_resume_skips_finished_cells(tmp_path):
    sweep = SweepConfig(ranks=(8,), partitions=(0, 4))
    run_sweep(sweep, _base(tmp_path), NUM_NODES, FakeRunner(), CPU)
    again = FakeRunner()
    records = run_sweep(sweep, _base(tmp_path), NUM_NODES, again, CPU)
    assert again.calls == []
    assert [r["status"] for r in records] == ["cached"] * 3
    # An interrupted cell (no summary.json) is trained again, the others stay cached.
    os.remove(tmp_path / "sweep" / "cells" / "tt-r8-metis-flat-p4" / "summary.json")
    third = FakeRunner()
    records = run_sweep(sweep, _base(tmp_path), NUM_NODES, third, CPU)
    assert third.calls == ["tt-r8-metis-flat-p4"]
    assert [r["status"] for r in records] == ["cached", "ok", "cached"]
    # A different training config (more epochs) does not match the cached cells; the stale
    # summary of a cell that then fails is removed, so it is not taken as finished later.
    fourth = FakeRunner(fail_on="tt-r8-original")
    records = run_sweep(sweep, _base(tmp_path, epochs=3), NUM_NODES, fourth, CPU)
    assert len(fourth.calls) == 3 and records[0]["status"] == "failed"
    assert not (tmp_path / "sweep" / "cells" / "tt-r8-original" / "summary.json").exists()


def test_retrained_cells_resume_their_run_or_replace_another(tmp_path):
    # A cell's directory is refused by training unless the cell resumes or overwrites it.
    sweep = SweepConfig(ranks=(8,), partitions=(0, 4))
    first = FakeRunner()
    run_sweep(sweep, _base(tmp_path), NUM_NODES, first, CPU)
    flags = lambda runner: [(c.resume, c.overwrite) for c in runner.configs]
    assert flags(first) == [(False, True)] * 3  # empty directories: either would do
    # An interrupted cell (its config.json, no summary.json) continues from its checkpoint.
    os.remove(tmp_path / "sweep" / "cells" / "tt-r8-metis-flat-p4" / "summary.json")
    interrupted = FakeRunner()
    run_sweep(sweep, _base(tmp_path), NUM_NODES, interrupted, CPU)
    assert interrupted.calls == ["tt-r8-metis-flat-p4"]
    assert flags(interrupted) == [(True, False)]
    # More runs change no trained field: every cell continues with the runs it lacks.
    more = FakeRunner()
    run_sweep(sweep, dataclasses.replace(_base(tmp_path), runs=3), NUM_NODES, more, CPU)
    assert len(more.calls) == 3 and flags(more) == [(True, False)] * 3
    # Another training config replaces every cell.
    other = FakeRunner()
    run_sweep(sweep, _base(tmp_path, epochs=3), NUM_NODES, other, CPU)
    assert len(other.calls) == 3 and flags(other) == [(False, True)] * 3
    # --overwrite trains every cell again, the finished ones too.
    forced = FakeRunner()
    records = run_sweep(sweep, _base(tmp_path, epochs=3, overwrite=True), NUM_NODES, forced,
                        CPU)
    assert len(forced.calls) == 3 and flags(forced) == [(False, True)] * 3
    assert [r["status"] for r in records] == ["ok"] * 3


@pytest.mark.slow
def test_real_cells_resume_or_are_replaced(tmp_path):
    base = TrainConfig(dataset="synthetic:nodes=300,degree=6,classes=4,seed=0", model="sage",
                       emb_dim=8, tt_rank=2, num_layers=2, hidden=8, fanouts=(3, 3),
                       batch_size=8, epochs=1, device="cpu", num_threads=1,
                       output=str(tmp_path / "sweep"), cache_dir=str(tmp_path / "cache"))
    sweep = SweepConfig(ranks=(2,), partitions=(0,), full=False)
    first = run_sweep(sweep, base, 300)
    cell = tmp_path / "sweep" / "cells" / "tt-r2-original"
    # Interrupted after its last checkpoint: resumed, nothing trained again.
    (cell / "summary.json").unlink()
    again = run_sweep(sweep, base, 300)
    assert again[0]["status"] == "ok" and again[0]["test_acc"] == first[0]["test_acc"]
    assert len((cell / "metrics.jsonl").read_text().splitlines()) == 1
    # Another config: the old run is replaced by the new one.
    other = run_sweep(sweep, dataclasses.replace(base, epochs=2), 300)
    assert other[0]["status"] == "ok"
    assert len((cell / "metrics.jsonl").read_text().splitlines()) == 2
    assert torch.load(cell / "checkpoint.pt", weights_only=True)["config"]["epochs"] == 2


def test_failed_cell_is_recorded_and_sweep_goes_on(tmp_path):
    runner = FakeRunner(fail_on="tt-r8-metis-flat-p4")
    records = run_sweep(SweepConfig(ranks=(8,), partitions=(0, 4)), _base(tmp_path),
                        NUM_NODES, runner, CPU)
    assert runner.calls == ["tt-r8-original", "tt-r8-metis-flat-p4", "full"]
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert records[1]["error"] == "RuntimeError: boom in tt-r8-metis-flat-p4"
    root = tmp_path / "sweep"
    md = (root / "sweep.md").read_text()
    assert "| TT rank 8 | 0.6850 ± 0.0100 | failed | 800x |" in md
    assert "- `tt-r8-metis-flat-p4`: RuntimeError: boom in tt-r8-metis-flat-p4" in md
    with open(root / "sweep.csv") as f:
        failed = [r for r in csv.DictReader(f) if r["status"] == "failed"]
    assert [r["error"] for r in failed] == ["RuntimeError: boom in tt-r8-metis-flat-p4"]
    # The failed cell has no summary: the next sweep tries it again.
    retry = FakeRunner()
    run_sweep(SweepConfig(ranks=(8,), partitions=(0, 4)), _base(tmp_path), NUM_NODES, retry,
              CPU)
    assert retry.calls == ["tt-r8-metis-flat-p4"]


def test_hierarchical_cells_derive_p_shapes(tmp_path):
    cells = build_cells(SweepConfig(ranks=(4,), partitions=(0, 10), method="hierarchical",
                                    full=False), _base(tmp_path), NUM_NODES)
    assert [c.name for c in cells] == ["tt-r4-original", "tt-r4-hierarchical-p10"]
    assert cells[0].config.partition == "original" and cells[0].config.tt_p_shapes is None
    h = cells[1].config
    assert (h.partition, h.num_parts, h.tt_p_shapes) == ("hierarchical", None, (10, 11, 10))
    # d follows the base config's tt_p_shapes.
    four = build_cells(SweepConfig(ranks=(4,), partitions=(10,), method="hierarchical",
                                   full=False),
                       _base(tmp_path, emb_dim=64, tt_p_shapes=(10, 10, 10, 10),
                             tt_q_shapes=(2, 2, 2, 8)),
                       NUM_NODES)
    assert four[0].config.tt_p_shapes == (10, 5, 5, 5)


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="'ranks' must not be empty"):
        SweepConfig(ranks=(), partitions=(0,))
    with pytest.raises(ValueError, match="'partitions' must not be empty"):
        SweepConfig(ranks=(8,), partitions=())
    with pytest.raises(ValueError, match=r"'ranks' must be integers >= 1, got \[0\]"):
        SweepConfig(ranks=(0, 8), partitions=(0,))
    with pytest.raises(ValueError, match=r"'partitions' must be integers >= 0, got \[-4\]"):
        SweepConfig(ranks=(8,), partitions=(-4,))
    with pytest.raises(ValueError, match=r"'partitions' has duplicates: \[4, 4\]"):
        SweepConfig(ranks=(8,), partitions=(4, 4))
    with pytest.raises(ValueError, match="unknown method 'spectral'; valid methods: "
                                         "metis-flat, hierarchical"):
        SweepConfig(ranks=(8,), partitions=(0,), method="spectral")
    with pytest.raises(ValueError, match=r"partitions \[2000\] exceed the number of nodes "
                                         r"\(1000\)"):
        build_cells(SweepConfig(ranks=(8,), partitions=(4, 2000)), _base(tmp_path), NUM_NODES)
    with pytest.raises(ValueError, match="--ranks must be comma-separated integers, got '8,x'"):
        parse_int_list("8,x", "--ranks")
    with pytest.raises(ValueError, match="--partitions must list at least one integer"):
        parse_int_list(" , ", "--partitions")


def test_cli_bad_input_exits_with_message(capsys):
    for argv, message in ((["--ranks", ""], "--ranks must list at least one integer"),
                          (["--method", "spectral"], "unknown method 'spectral'"),
                          (["--model", "mlp"], "unknown model 'mlp'")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world: int, port: int, root: str, results: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    base = TrainConfig(dataset="synthetic:nodes=1000,degree=8,classes=4,seed=0", device="cpu",
                       output=root, cache_dir=os.path.join(root, "cache"))
    # Rank 1 alone fails one cell: both ranks must record it and go on together.
    runner = FakeRunner(fail_on="tt-r8-metis-flat-p4" if rank == 1 else None)
    records = run_sweep(SweepConfig(ranks=(8,), partitions=(0, 4), full=False), base,
                        NUM_NODES, runner, CPU)
    results[rank] = {"calls": runner.calls, "records": records}


@pytest.mark.slow
def test_ranks_agree_on_a_failure_on_one_rank(tmp_path):
    port = _free_port()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_distributed_worker, args=(2, port, str(tmp_path / "s"), results),
                           nprocs=2, start_method="spawn")
        results = dict(results)
    assert results[0]["calls"] == results[1]["calls"] == ["tt-r8-original",
                                                           "tt-r8-metis-flat-p4"]
    assert results[1]["records"] == []  # rank 0 alone keeps records and writes outputs
    statuses = [(r["status"], r["error"]) for r in results[0]["records"]]
    assert statuses == [("ok", None), ("failed", "failed on another rank")]
    data = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [c["status"] for c in data["cells"]] == ["ok", "failed"]


@pytest.mark.slow
def test_real_training_sweep_end_to_end(tmp_path, monkeypatch, capsys):
    """The CLI on the real training job: a tiny synthetic graph, hierarchical, 2 x 2 + full."""
    import gnn_tt.training.train

    out = tmp_path / "real"
    argv = ["--dataset", "synthetic:nodes=600,degree=8,classes=4,seed=0", "--model", "sage",
            "--emb-dim", "8", "--num-layers", "2", "--hidden", "16", "--fanouts", "5,5",
            "--batch-size", "16", "--epochs", "2", "--runs", "1", "--device", "cpu",
            "--ranks", "2,4", "--partitions", "0,4", "--method", "hierarchical",
            "--output", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    data = json.loads((out / "sweep.json").read_text())
    assert [c["name"] for c in data["cells"]] == ["tt-r2-original", "tt-r2-hierarchical-p4",
                                                 "tt-r4-original", "tt-r4-hierarchical-p4",
                                                 "full"]
    for cell in data["cells"]:
        summary = json.loads((out / cell["output"] / "summary.json").read_text())
        assert cell["status"] == "ok" and cell["test_acc"] == summary["test_acc"]
        assert 0.0 <= cell["test_acc"]["mean"] <= 1.0 and len(cell["test_acc"]["runs"]) == 1
        assert cell["compression_ratio"] == summary["full_table_parameters"] / summary[
            "embedding_parameters"]
    h = json.loads((out / "cells" / "tt-r4-hierarchical-p4" / "summary.json").read_text())
    assert h["tt_p_shapes"] == [4, 13, 13]  # p1 = parts, 13 * 13 >= ceil(1.05 * 600 / 4)
    by_name = {c["name"]: c for c in data["cells"]}
    assert by_name["full"]["embedding_parameters"] == 600 * 8
    assert (by_name["tt-r2-hierarchical-p4"]["embedding_parameters"]
            < by_name["tt-r4-hierarchical-p4"]["embedding_parameters"])
    assert (out / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    assert "| TT rank 4 |" in capsys.readouterr().out  # the table is printed
    # Resuming: every cell is cached, the training job is not called again.
    calls = []
    monkeypatch.setattr(gnn_tt.training.train, "run", lambda config: calls.append(config))
    assert main(argv) == 0 and calls == []
    data = json.loads((out / "sweep.json").read_text())
    assert {c["status"] for c in data["cells"]} == {"cached"}
