"""Two CPU processes under torchrun (gloo): identical replicas, exact metrics, restarts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gnn_tt.training.callbacks import FAIL_ENV
from gnn_tt.training.config import TrainConfig
from gnn_tt.training.evaluate import evaluate_sampled
from gnn_tt.training.train import TrainData, build_model

pytestmark = pytest.mark.slow  # every test trains under torchrun

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_torchrun_worker.py")
COMMON = ["--dataset", "synthetic:nodes=1500,degree=10,classes=8,seed=0", "--num-layers", "2",
          "--fanouts", "5,5", "--eval-fanouts=-1,-1", "--emb-dim", "16", "--tt-rank", "8",
          "--batch-size", "32", "--epochs", "2", "--device", "cpu", "--num-threads", "1"]
GAT = ["--model", "gat", "--hidden", "8", "--heads", "2", "--emb", "tt"]


def torchrun(out: Path, args: list[str], restarts: int = 0, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", str(restarts), str(WORKER), *COMMON, *args, "--output", str(out),
           "--cache-dir", str(out.parent / "cache")]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def records(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k} for line in lines]


def assert_replicas_identical(out: Path) -> dict:
    a = torch.load(out / "rank0.pt", weights_only=True)
    b = torch.load(out / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    return a


@pytest.fixture(scope="module")
def gat_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "gat"
    torchrun(out, GAT)
    return out


def test_replicas_identical_and_metrics_exact(gat_run):
    state = assert_replicas_identical(gat_run)
    assert any("running_mean" in k for k in state)  # batch-norm statistics were synced too
    # A single-process evaluation of the final model gives the metrics the 2 ranks logged.
    config = TrainConfig.from_dict(json.loads((gat_run / "config.json").read_text()))
    data = TrainData.load(config, torch.device("cpu"))
    model = build_model(config, data.dataset, data.layout, torch.device("cpu"), seed=0)
    model.load_state_dict(state)
    acc = evaluate_sampled(model, data.graph, data.y, data.splits,
                           config.eval_fanouts, 512, torch.device("cpu"))
    last = records(gat_run)[-1]
    assert (acc["val"], acc["test"]) == (last["val_acc"], last["test_acc"])
    summary = json.loads((gat_run / "summary.json").read_text())
    assert summary["world_size"] == 2


def test_full_table_replicas_identical(tmp_path):
    torchrun(tmp_path / "full", ["--model", "sage", "--hidden", "16", "--emb", "full"])
    state = assert_replicas_identical(tmp_path / "full")
    assert state["node_input.embedding.weight"].shape == (1500, 16)


def test_killed_worker_restarts_and_resumes(gat_run, tmp_path):
    # Rank 1 dies after epoch 0 on the first attempt; torchrun restarts both workers, which
    # find the checkpoint and continue: the metrics equal the uninterrupted run's.
    out = tmp_path / "restarted"
    torchrun(out, GAT, restarts=1, env={FAIL_ENV: "1:0"})
    assert records(out) == records(gat_run)
    assert_replicas_identical(out)
