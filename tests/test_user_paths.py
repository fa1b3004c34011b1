"""What a new user types, including mistakes: each path ends in a result or a one-line error."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_tt.cli import main as cli_main
from gnn_tt.data.npz import load_npz
from gnn_tt.experiments.report import main as report_main
from gnn_tt.experiments.report import make_record
from gnn_tt.experiments.sweep import main as sweep_main
from gnn_tt.training.checkpoint import CHECKPOINT_NAME, CheckpointError
from gnn_tt.training.config import TrainConfig
from gnn_tt.training.summary import format_summary
from gnn_tt.training.train import main as train_main
from gnn_tt.training.train import run


def test_bare_command_prints_help_and_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: gnn-tt <command>") and "train" in out
    assert list(tmp_path.iterdir()) == []  # no runs/ directory, no cache


@pytest.mark.parametrize("key", ["y", "edge_index", "x"])
def test_npz_object_array_names_file_and_key(tmp_path, key):
    arrays = {"edge_index": np.array([[0, 1], [1, 0]]), "y": np.array([0, 1]),
              "x": np.ones((2, 3), dtype=np.float32)}
    arrays[key] = np.array([object(), None], dtype=object)
    path = tmp_path / "graph.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError) as info:
        load_npz(path)
    message = str(info.value)
    assert str(path) in message and f"'{key}' is an object array" in message
    assert "allow_pickle" not in message


# --- gnn-tt train, report and sweep on one tiny finished run ---------------------------------

TINY = "synthetic:nodes=300,degree=6,classes=4,seed=0"  # 24 training nodes
TINY_ARGS = ["--dataset", TINY, "--model", "sage", "--emb-dim", "8", "--tt-rank", "2",
             "--num-layers", "2", "--hidden", "8", "--fanouts", "3,3", "--batch-size", "8",
             "--epochs", "2", "--device", "cpu", "--num-threads", "1"]


def tiny_config(out, cache, **overrides) -> TrainConfig:
    """The config of TINY_ARGS: hierarchical rows with automatic tt_p_shapes (the default)."""
    values = dict(dataset=TINY, model="sage", emb_dim=8, tt_rank=2, num_layers=2, hidden=8,
                  fanouts=(3, 3), batch_size=8, epochs=2, device="cpu", num_threads=1,
                  output=str(out), cache_dir=str(cache))
    values.update(overrides)
    return TrainConfig(**values)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory`` with its bytes and modification time."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished default-layout `gnn-tt train` run (2 epochs) and what it printed on stderr;
    tests copy the directory before changing anything in it."""
    root = tmp_path_factory.mktemp("finished")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        summary = run(tiny_config(root / "run", root / "cache"))
    return root / "run", root / "cache", summary, stderr.getvalue()


def copy_run(finished, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    return out


def one_error_line(err: str, prog: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.slow
def test_report_reads_a_default_train_output_and_a_sweep(finished, tmp_path, capsys):
    # Automatic tt_p_shapes are None in config.json: p1 comes from the summary's shapes.
    run_dir, _, summary, _ = finished
    assert json.loads((run_dir / "config.json").read_text())["tt_p_shapes"] is None
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    cell = make_record("cell", tiny_config(run_dir, "c").to_dict(), summary)
    (sweep_dir / "sweep.json").write_text(json.dumps(
        {"sweep": {"method": "hierarchical"}, "base": {}, "cells": [cell]}))
    out = tmp_path / "report"
    assert report_main([str(sweep_dir), str(run_dir), "--output", str(out)]) == 0
    text = (out / "report.md").read_text()
    p1 = summary.tt_p_shapes[0]
    assert f"tt r2 hierarchical {p1}" in text and cell["parts"] == p1
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "report.csv",
                                               "sweep0.png", "runs.png"}


def test_report_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "sweep.json").write_text(json.dumps(
        {"sweep": {"method": "metis-flat"}, "base": {}, "cells": []}))
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sweep.json").write_text("{\"cells\": [")
    out = tmp_path / "report"
    for bad, message in ((tmp_path / "missing", "does not exist"),
                         (tmp_path / "empty", "it is empty"),
                         (tmp_path / "bad", "is not valid JSON")):
        # The good sweep comes first: it must not leave a plot behind.
        assert report_main([str(sweep_dir), str(bad), "--output", str(out)]) == 2
        line = one_error_line(capsys.readouterr().err, "gnn-tt report")
        assert str(bad) in line and message in line
        assert not out.exists()
    assert cli_main(["report", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_refused_resume_changes_nothing_in_the_output(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    before = snapshot(out)
    other = tiny_config(out, finished[1], hidden=4, resume=True)
    with pytest.raises(CheckpointError, match="different config"):
        run(other)
    assert snapshot(out) == before  # config.json too
    ckpt = out / CHECKPOINT_NAME
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    before = snapshot(out)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        run(tiny_config(out, finished[1], resume=True))
    assert snapshot(out) == before


@pytest.mark.slow
def test_non_empty_output_is_refused_before_anything_is_written(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    before = snapshot(out)
    cache = tmp_path / "fresh-cache"
    # Same command again: one line naming the directory and both flags, exit status 2, and
    # nothing written anywhere (the refusal comes before the partition, which would be cached).
    assert train_main([*TINY_ARGS, "--output", str(out), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    line = one_error_line(err, "gnn-tt train")
    assert str(out) in line and "--resume" in line and "--overwrite" in line
    assert "data: loaded" not in err
    assert snapshot(out) == before and not cache.exists()
    with pytest.raises(FileExistsError, match="is not empty"):
        run(tiny_config(out, cache))  # the API refuses too
    with pytest.raises(ValueError, match="--resume and --overwrite exclude each other"):
        run(tiny_config(out, cache, resume=True, overwrite=True))
    assert snapshot(out) == before and not cache.exists()
    # An unrelated file makes a directory non-empty as well.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(FileExistsError):
        run(tiny_config(tmp_path / "notes", cache))


@pytest.mark.slow
def test_torchrun_restart_resumes_without_flags(finished, tmp_path, monkeypatch):
    out = copy_run(finished, tmp_path)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    summary = run(tiny_config(out, finished[1]))
    assert summary.test_acc == finished[2].test_acc  # resumed: nothing trained again
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_overwrite_replaces_the_old_run(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    summary = run(tiny_config(out, finished[1], hidden=4, epochs=1, overwrite=True))
    assert json.loads((out / "config.json").read_text())["hidden"] == 4
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert state["config"]["hidden"] == 4
    assert json.loads((out / "summary.json").read_text())["test_acc"] == \
        summary.test_acc.to_dict()


@pytest.mark.slow
def test_overwrite_clears_the_old_files_before_training(finished, tmp_path, monkeypatch):
    # A crash in the first epoch of the new job leaves its config.json and none of the old
    # job's files: never an old checkpoint (or a finished-looking summary) beside a new config.
    import gnn_tt.training.train as train

    out = copy_run(finished, tmp_path)

    def crash(*args, **kwargs):
        raise RuntimeError("crash in the first epoch")

    monkeypatch.setattr(train, "train_epoch", crash)
    with pytest.raises(RuntimeError, match="crash in the first epoch"):
        run(tiny_config(out, finished[1], hidden=4, overwrite=True))
    assert json.loads((out / "config.json").read_text())["hidden"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_cuda_device_without_cuda_is_an_argument_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    assert train_main([*TINY_ARGS, "--device", "cuda", "--output", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err, "gnn-tt train")
    assert "device 'cuda:0' requested but CUDA is not available" in line
    assert not out.exists()


def test_sweep_partitions_over_the_node_count_is_one_line(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep_main(["--dataset", TINY, "--device", "cpu", "--ranks", "2",
                       "--partitions", "0,500", "--output", str(out),
                       "--cache-dir", str(tmp_path / "cache")]) == 2
    line = one_error_line(capsys.readouterr().err, "gnn-tt sweep")
    assert "--partitions [500] exceed the number of nodes (300)" in line
    assert not out.exists()


@pytest.mark.slow
def test_setup_stages_print_progress(finished):
    # Before the first epoch: one line per stage with its seconds, on stderr.
    _, _, summary, stderr = finished
    assert re.search(r"^data: loaded synthetic:nodes=300\S* \(300 nodes, [\d,]+ edges\) in "
                     r"\d+\.\d s$", stderr, re.M), stderr
    assert re.search(rf"^partition: hierarchical \({summary.tt_p_shapes[0]}, \d+, \d+\) in "
                     r"\d+\.\d s", stderr, re.M), stderr


@pytest.mark.slow
def test_epoch_and_evaluation_seconds_are_recorded_apart(finished):
    run_dir, _, summary, _ = finished
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["epoch_seconds"] > 0 and r["eval_seconds"] > 0 for r in records)
    assert summary.eval_seconds == pytest.approx(sum(r["eval_seconds"] for r in records) / 2)
    assert json.loads((run_dir / "summary.json").read_text())["eval_seconds"] == \
        summary.eval_seconds
    assert "eval_s" in format_summary(summary)


@pytest.mark.slow
def test_total_seconds_count_every_process_of_the_job(finished, tmp_path):
    # A resume of the finished run adds its own seconds to the job's total.
    summary = finished[2]
    out = copy_run(finished, tmp_path)
    resumed = run(tiny_config(out, finished[1], resume=True))
    assert resumed.total_seconds > summary.total_seconds
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert 0 < state["elapsed_seconds"] < summary.total_seconds
    # A checkpoint written before the seconds were stored still resumes.
    del state["elapsed_seconds"]
    torch.save(state, out / CHECKPOINT_NAME)
    assert run(tiny_config(out, finished[1], resume=True)).test_acc == summary.test_acc
