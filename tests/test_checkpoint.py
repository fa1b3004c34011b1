import random

import numpy as np
import pytest
import torch

from gnn_tt.training.checkpoint import (CheckpointError, load_checkpoint, rng_state, save_checkpoint,
                               set_rng_state)
from gnn_tt.training.config import TrainConfig


def _draws() -> tuple:
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)])


def _state(config: TrainConfig, digest: str | None) -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {"config": config.to_dict(), "row_assignment_hash": digest, "run": 1, "epoch": 4,
            "model": model.state_dict(), "optimizers": {"gnn": opt.state_dict()},
            "rng": [rng_state()], "run_state": {"best_val": 0.5}, "finished_runs": [],
            "history": [{"epoch": 0, "loss": 1.0}]}


def test_rng_state_round_trip_through_a_file(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = rng_state()
    expected = _draws()
    torch.save(state, tmp_path / "rng.pt")
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def test_save_load_round_trip(tmp_path):
    cfg = TrainConfig(epochs=5)
    state = _state(cfg, "abc123")
    path = save_checkpoint(tmp_path / "ckpt.pt", state)
    # Runtime fields (device, runs, output) may differ on resume.
    loaded = load_checkpoint(path, TrainConfig(epochs=5, runs=3, device="cpu"), "abc123")
    assert (loaded["run"], loaded["epoch"], loaded["run_state"]) == (1, 4, {"best_val": 0.5})
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v)
    assert loaded["optimizers"]["gnn"]["state"][0]["step"] == 1
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary


def test_corrupt_checkpoint_names_the_path(tmp_path):
    cfg = TrainConfig()
    path = save_checkpoint(tmp_path / "ckpt.pt", _state(cfg, None))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a crash without atomic writes
    with pytest.raises(CheckpointError, match=r"checkpoint '.*ckpt.pt' is corrupt or unreadable"):
        load_checkpoint(path, cfg, None)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"'.*ckpt.pt' is corrupt or unreadable"):
        load_checkpoint(path, cfg, None)
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match=r"'.*ckpt.pt' is not a gnn_tt checkpoint"):
        load_checkpoint(path, cfg, None)


def test_different_config_names_the_fields(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", _state(TrainConfig(tt_rank=16, hidden=64), "h"))
    with pytest.raises(CheckpointError, match=r"different config \(differing fields: "
                                              r"hidden: checkpoint 64 vs now 32, tt_rank: "
                                              r"checkpoint 16 vs now 8\)"):
        load_checkpoint(path, TrainConfig(tt_rank=8, hidden=32), "h")


def test_different_row_assignment(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", _state(TrainConfig(), "aaaa"))
    with pytest.raises(CheckpointError, match=r"different row assignment \(hash aaaa vs now "
                                              r"bbbb\)"):
        load_checkpoint(path, TrainConfig(), "bbbb")
