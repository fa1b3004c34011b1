"""Two CPU processes under torchrun (gloo): identical replicas, exact metrics, restarts; the
full table replicated on the host and sharded over the ranks trains alike."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gnn_tt.embedding import FullNodeEmbedding
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
FULL = ["--model", "sage", "--hidden", "16", "--emb", "full", "--layerwise-inference"]


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


def layerwise_results(out: Path) -> list[dict]:
    """The runs of ``summary.json`` without their times."""
    runs = json.loads((out / "summary.json").read_text())["runs"]
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in runs]


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


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory) -> dict[str, Path]:
    """The same job with the full table replicated in host memory and sharded over the two
    ranks."""
    out = tmp_path_factory.mktemp("full")
    for placement in ("host", "sharded"):
        torchrun(out / placement, [*FULL, "--emb-placement", placement])
    return {placement: out / placement for placement in ("host", "sharded")}


def test_full_table_replicas_identical(full_runs):
    state = assert_replicas_identical(full_runs["host"])
    assert state["node_input.embedding.weight"].shape == (1500, 16)


def test_sharded_table_trains_like_the_replicated_table(full_runs):
    # The same model, seeds and batches: only the summation order of the rows' gradients
    # differs (owners sum what the ranks send; replicas sum the all-gathered rows).
    host, sharded = (assert_replicas_identical(full_runs[p]) for p in ("host", "sharded"))
    assert "node_input.weight" not in sharded  # the shards are saved apart
    initial = FullNodeEmbedding(1500, 16, seed=0).weight.detach()
    assert not torch.allclose(sharded["full_table"], initial)  # it trained
    torch.testing.assert_close(sharded["full_table"], host["node_input.embedding.weight"],
                               rtol=1e-4, atol=1e-5)
    gnn = [k for k in host if k.startswith("gnn.")]
    torch.testing.assert_close({k: sharded[k] for k in gnn}, {k: host[k] for k in gnn},
                               rtol=1e-4, atol=1e-5)
    got, expected = records(full_runs["sharded"]), records(full_runs["host"])
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in expected], rel=1e-5)
    for key in ("val_acc", "test_acc"):
        assert [r[key] for r in got] == [r[key] for r in expected]
    summaries = {p: json.loads((full_runs[p] / "summary.json").read_text()) for p in full_runs}
    # Layer-wise inference of the best model: every rank infers every node through the shards.
    runs = {p: layerwise_results(full_runs[p]) for p in full_runs}
    assert runs["sharded"] == runs["host"] and "sampled_val_acc" in runs["host"][0]
    assert summaries["sharded"]["emb_placement"] == "sharded"
    assert summaries["sharded"]["emb_placement_reason"] == "requested"
    assert summaries["sharded"]["embedding_parameters"] == 1500 * 16
    # Rank 1's share of a one-node split is empty: its evaluation batch holds no ids.
    assert float(sharded["one_node_acc"]) in (0.0, 1.0)
    assert sorted(p.name for p in full_runs["sharded"].glob("checkpoint*")) == [
        "checkpoint.pt", "checkpoint.shard0-of-2.pt", "checkpoint.shard1-of-2.pt"]
    ckpt = torch.load(full_runs["sharded"] / "checkpoint.pt", weights_only=True)
    assert ckpt["emb_shards"] == 2 and list(ckpt["optimizers"]) == ["gnn"]


def test_killed_worker_resumes_its_shard(full_runs, tmp_path):
    # Rank 0 dies after epoch 0: both ranks restart from checkpoint.pt and their own shard.
    out = tmp_path / "restarted"
    torchrun(out, [*FULL, "--emb-placement", "sharded"], restarts=1, env={FAIL_ENV: "0:0"})
    assert records(out) == records(full_runs["sharded"])
    # Layer-wise inference of the best epoch's model, whose shards were checkpointed too.
    assert layerwise_results(out) == layerwise_results(full_runs["sharded"])
    assert not list(out.glob("*.prev.pt"))
    state = assert_replicas_identical(out)
    assert torch.equal(state["full_table"],
                       torch.load(full_runs["sharded"] / "rank0.pt")["full_table"])


def test_killed_worker_restarts_and_resumes(gat_run, tmp_path):
    # Rank 1 dies after epoch 0 on the first attempt; torchrun restarts both workers, which
    # find the checkpoint and continue: the metrics equal the uninterrupted run's.
    out = tmp_path / "restarted"
    torchrun(out, GAT, restarts=1, env={FAIL_ENV: "1:0"})
    assert records(out) == records(gat_run)
    assert_replicas_identical(out)
