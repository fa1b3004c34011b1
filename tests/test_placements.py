"""Placing the full table in training: the auto rule, refusals, the placements' models, and the
shard-by-shard checkpoint (in one process; tests/test_distributed_train.py trains it sharded
over two)."""
import json
import re
from pathlib import Path

import pytest
import torch

from gnn_tt.embedding.device_table import DeviceNodeEmbedding
from gnn_tt.embedding.node_input import ConcatInput, FullNodeEmbedding, build_node_input
from gnn_tt.embedding.placement import (DEVICE_MEMORY_SHARE, PLACEMENTS, FreeMemory,
                                        build_full_table, choose_placement, table_bytes)
from gnn_tt.embedding.sharded_table import ShardedNodeEmbedding
from gnn_tt.models import GraphSAGE, NodeClassifier
from gnn_tt.training import train as train_module
from gnn_tt.training.checkpoint import (CHECKPOINT_NAME, CheckpointError, Checkpointer,
                                        load_checkpoint, shard_path, sharded_table)
from gnn_tt.training.config import TrainConfig
from gnn_tt.training.run_state import EpochRecord, RunState
from gnn_tt.training.train import TablePlacement, Trainer, main, place_table, run

GRAPH = "synthetic:nodes=1500,degree=10,classes=8,seed=0"
GiB = 1 << 30
CUDA = torch.device("cuda", 0)
# products: 2,449,029 x 100 -> 2.74 GiB with the SparseAdam state; papers100M 111M x 128.
PRODUCTS, PAPERS = (2_449_029, 100), (111_059_956, 128)


def small(tmp_path: Path, name: str, **overrides) -> TrainConfig:
    values = dict(dataset=GRAPH, model="sage", emb="full", emb_dim=16, num_layers=2,
                  hidden=16, fanouts=(5, 5), eval_fanouts=(-1, -1), batch_size=32, epochs=2,
                  lr=0.01, emb_lr=0.05, device="cpu", num_threads=1,
                  output=str(tmp_path / name))
    values.update(overrides)
    return TrainConfig(**values)


def metrics(out: str) -> list[dict]:
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k} for line in lines]


# ---------------------------------------------------------------- the rule

def test_table_bytes():
    assert table_bytes(*PRODUCTS) == 3 * 2_449_029 * 100 * 4
    assert table_bytes(11, 4, shards=2) == 3 * 6 * 4 * 4  # ceil(11 / 2) rows
    with pytest.raises(ValueError, match=r"'table_bytes' needs a positive integer shards, got 0"):
        table_bytes(11, 4, shards=0)


@pytest.mark.parametrize("table, world_size, device_gib, expected, reason", [
    (PRODUCTS, 1, 80, "device", r"auto: table \+ SparseAdam state \(2.74 GiB\) fit in 50% of "
                                r"the 80.00 GiB free on cuda:0"),
    (PRODUCTS, 1, 5, "host", r"auto: table \+ SparseAdam state \(2.74 GiB\) exceed 50% of the "
                             r"5.00 GiB free on cuda:0"),
    (PAPERS, 8, 80, "sharded", r"exceed 50% of the 80.00 GiB free on cuda:0; a shard of 8 "
                               r"\(19.86 GiB\) fits"),
    (PAPERS, 2, 80, "host", r"\(158.87 GiB\) and a shard of 2 \(79.44 GiB\) exceed 50% of the "
                            r"80.00 GiB"),
    (PAPERS, 1, 80, "host", r"\(158.87 GiB\) exceed 50%"),
])
def test_auto_on_a_gpu(table, world_size, device_gib, expected, reason):
    memory = FreeMemory(CUDA, device_gib * GiB, 1000 * GiB)
    placement, why = choose_placement("auto", *table, world_size, memory)
    assert placement == expected and DEVICE_MEMORY_SHARE == 0.5
    assert why.startswith("auto: ") and re.search(reason, why)


def test_auto_share_is_a_bound():
    need = table_bytes(*PRODUCTS)
    assert choose_placement("auto", *PRODUCTS, 1, FreeMemory(CUDA, 2 * need, need))[0] == "device"
    assert choose_placement("auto", *PRODUCTS, 1, FreeMemory(CUDA, 2 * need - 1, need))[0] == "host"
    assert choose_placement("auto", *PRODUCTS, 1, FreeMemory(CUDA, 2 * need, need),
                            share=0.25)[0] == "host"


def test_auto_on_the_cpu_is_host():
    memory = FreeMemory(torch.device("cpu"), 1000 * GiB, 1000 * GiB)
    assert choose_placement("auto", *PRODUCTS, 4, memory) == \
        ("host", "auto on the CPU, where the device is the host")


@pytest.mark.parametrize("requested", ["host", "device", "sharded"])
def test_requested_placements_are_kept(requested):
    memory = FreeMemory(CUDA, 80 * GiB, 80 * GiB)
    assert choose_placement(requested, *PRODUCTS, 2, memory) == (requested, "requested")


def test_sharded_in_one_process_is_the_device_placement():
    placement, why = choose_placement("sharded", 11, 4, 1, FreeMemory(CUDA, GiB, GiB))
    assert placement == "device"
    assert why == ("sharded over 1 process is one shard of every row on cuda:0, which is the "
                   "device placement: using it (launch under torchrun with several processes "
                   "to shard)")


@pytest.mark.parametrize("requested, world_size, memory, message", [
    ("device", 1, FreeMemory(CUDA, 2 * GiB, 1000 * GiB),
     r"emb_placement 'device' \(requested\) cannot hold the 2,449,029 x 100 full table: the "
     r"table and its SparseAdam state need 2,938,834,800 bytes \(2.74 GiB\), 2,147,483,648 "
     r"bytes \(2.00 GiB\) are free on cuda:0; use another --emb-placement"),
    ("host", 1, FreeMemory(CUDA, 80 * GiB, GiB),
     r"emb_placement 'host' \(requested\) cannot hold .* need 2,938,834,800 bytes \(2.74 GiB\), "
     r"1,073,741,824 bytes \(1.00 GiB\) are host memory"),
    ("sharded", 2, FreeMemory(CUDA, GiB, 1000 * GiB),
     r"emb_placement 'sharded' \(requested\) cannot hold .* this rank's shard and its SparseAdam "
     r"state need 1,469,418,000 bytes \(1.37 GiB\), 1,073,741,824 bytes"),
    ("auto", 2, FreeMemory(CUDA, GiB, GiB),
     r"emb_placement 'host' \(auto: table \+ SparseAdam state \(2.74 GiB\) and a shard of 2 "
     r"\(1.37 GiB\) exceed 50% of the 1.00 GiB free on cuda:0\) cannot hold"),
    ("sharded", 1, FreeMemory(torch.device("cpu"), GiB, GiB),
     r"emb_placement 'device' \(sharded over 1 process .*\) cannot hold .* are free on cpu"),
])
def test_a_placement_that_cannot_hold_the_table_is_refused(requested, world_size, memory,
                                                           message):
    with pytest.raises(ValueError, match=message):
        choose_placement(requested, *PRODUCTS, world_size, memory)


def test_bad_names():
    memory = FreeMemory(CUDA, GiB, GiB)
    with pytest.raises(ValueError, match=r"unknown emb_placement 'gpu' \(valid: auto, host, "
                                         r"device, sharded\)"):
        choose_placement("gpu", 11, 4, 1, memory)
    with pytest.raises(ValueError, match=r"'build_full_table' needs placement host, device or "
                                         r"sharded, got 'auto' \(resolve 'auto' with "
                                         r"choose_placement\)"):
        build_full_table("auto", 11, 4)
    with pytest.raises(ValueError, match=r"unknown emb_placement 'gpu'; valid values: "
                                         r"auto, host, device, sharded"):
        TrainConfig(emb_placement="gpu")
    assert PLACEMENTS == ("auto", "host", "device", "sharded")


def test_free_memory_on_the_cpu_is_the_host_memory():
    one, four = (FreeMemory.measure(torch.device("cpu"), n) for n in (1, 4))
    assert one.device_bytes == one.host_bytes > 0
    assert four.host_bytes == pytest.approx(one.host_bytes / 4, rel=0.2)


# ---------------------------------------------------------------- the models

@pytest.mark.parametrize("placement, cls", [("host", FullNodeEmbedding),
                                            ("device", DeviceNodeEmbedding),
                                            ("sharded", ShardedNodeEmbedding)])
def test_every_placement_builds_the_same_model(placement, cls):
    def model(placement: str) -> NodeClassifier:
        torch.manual_seed(5)
        node_input = build_node_input("full+features", num_nodes=11, embedding_dim=4,
                                      x=torch.ones(11, 3), seed=2, placement=placement)
        return NodeClassifier(node_input, GraphSAGE(7, 8, 3))

    got, host = model(placement), model("host")
    assert isinstance(got.node_input, ConcatInput) and type(got.node_input.learnable) is cls
    # The table comes from its own generator: the GNN after it starts alike.
    for (name, a), b in zip(got.gnn.named_parameters(), host.gnn.parameters()):
        assert torch.equal(a, b), name
    table = got.node_input.learnable
    weight = table.full_weight() if placement == "sharded" else table.weight
    assert torch.equal(weight, host.node_input.learnable.weight)


def test_place_table_for_inputs_without_a_full_table(tmp_path):
    assert place_table(small(tmp_path, "tt", emb="tt"), 1500, torch.device("cpu")) == \
        TablePlacement()
    assert TablePlacement().shards is None and TablePlacement("sharded").shards == 1


# ---------------------------------------------------------------- shard checkpoints

def _sharded_model(seed: int = 3) -> tuple[NodeClassifier, dict]:
    torch.manual_seed(0)
    node_input = build_node_input("full", num_nodes=11, embedding_dim=4, seed=seed,
                                  placement="sharded")
    model = NodeClassifier(node_input, GraphSAGE(4, 8, 3))
    optimizers = {"gnn": torch.optim.Adam(model.gnn_parameters()),
                  "emb": node_input.embedding_optimizer(0.1)}
    node_input(torch.tensor([1, 5, 5])).sum().backward()
    for opt in optimizers.values():
        opt.step()
    return model, optimizers


def _save(checkpointer: Checkpointer, model, optimizers, epoch: int, best=None) -> None:
    history = [EpochRecord(0, e, 1.0, 0.5) for e in range(epoch)]
    checkpointer.save(0, epoch, model, optimizers, RunState(0.5, 0.25, 0, [0.5] * epoch), [],
                      history, 1.0, best)


def test_sharded_checkpoint_round_trip(tmp_path):
    cfg = TrainConfig(epochs=3, resume=True)
    model, optimizers = _sharded_model()
    table = sharded_table(model)
    checkpointer = Checkpointer(tmp_path, cfg, None, emb_shards=1)
    _save(checkpointer, model, optimizers, 1)
    best = table.shard_state_dict()
    _save(checkpointer, model, optimizers, 2, best)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        CHECKPOINT_NAME, "checkpoint.shard0-of-1.pt", "metrics.jsonl"]
    main_state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    # The shard's optimizer state is the shard's, not in the checkpoint every rank reads.
    assert list(main_state["optimizers"]) == ["gnn"] and main_state["emb_shards"] == 1
    assert not any("node_input" in k for k in main_state["model"])

    resume = checkpointer.restore()
    assert (resume["shard"]["run"], resume["shard"]["epoch"]) == (0, 2)
    assert torch.equal(resume["shard"]["best"]["weight"], best["weight"])
    fresh, fresh_optimizers = _sharded_model(seed=4)
    checkpointer.load_model(resume, fresh, fresh_optimizers)
    assert torch.equal(sharded_table(fresh).weight, table.weight)
    for name in ("gnn", "emb"):
        assert str(fresh_optimizers[name].state_dict()) == str(optimizers[name].state_dict())


def test_a_save_interrupted_before_the_checkpoint_falls_back_to_the_previous_shard(tmp_path):
    cfg = TrainConfig(epochs=3, resume=True)
    model, optimizers = _sharded_model()
    checkpointer = Checkpointer(tmp_path, cfg, None, emb_shards=1)
    current, previous = shard_path(tmp_path, 0, 1), shard_path(tmp_path, 0, 1, previous=True)
    _save(checkpointer, model, optimizers, 1)
    epoch_1 = sharded_table(model).weight.detach().clone()
    files_1 = {path: path.read_bytes() for path in (checkpointer.path, current)}
    with torch.no_grad():
        sharded_table(model).weight.add_(1.0)
    _save(checkpointer, model, optimizers, 2)
    assert not previous.exists()  # removed once checkpoint.pt moved past it
    # What a crash between the shards and checkpoint.pt leaves: the shard of epoch 2 beside
    # the one it replaced, and the checkpoint of epoch 1.
    checkpointer.path.write_bytes(files_1[checkpointer.path])
    previous.write_bytes(files_1[current])
    resume = checkpointer.restore()
    assert resume["epoch"] == 1 and resume["shard"]["epoch"] == 1
    assert torch.equal(resume["shard"]["table"]["weight"], epoch_1)
    assert current.exists() and not previous.exists()  # the shard of epoch 1 is current again


def test_shard_problems_raise_checkpoint_errors(tmp_path):
    cfg = TrainConfig(epochs=3, resume=True)
    model, optimizers = _sharded_model()
    checkpointer = Checkpointer(tmp_path, cfg, None, emb_shards=1)
    _save(checkpointer, model, optimizers, 1)
    current = shard_path(tmp_path, 0, 1)
    data = current.read_bytes()
    current.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"\(run 0, epoch 1\) lacks a usable shard of its "
                                              r"table: rank 0: checkpoint '.*shard0-of-1.pt' is "
                                              r"corrupt or unreadable"):
        checkpointer.restore()
    current.unlink()
    with pytest.raises(CheckpointError, match=r"lacks a usable shard of its table: rank 0: no "
                                              r"file '.*checkpoint.shard0-of-1.pt'"):
        checkpointer.restore()
    # The whole table's checkpoint and a sharded one do not stand for each other.
    with pytest.raises(CheckpointError, match=r"holds a full table sharded over 1 ranks "
                                              r"\(checkpoint.shard\*-of-1.pt\); resume it with "
                                              r"--emb-placement sharded under 1 processes"):
        load_checkpoint(tmp_path / CHECKPOINT_NAME, cfg, None)
    with pytest.raises(CheckpointError, match=r"sharded under 1 processes, not 2"):
        load_checkpoint(tmp_path / CHECKPOINT_NAME, cfg, None, emb_shards=2)
    whole = Checkpointer(tmp_path / "whole", cfg, None)
    host = NodeClassifier(build_node_input("full", num_nodes=11, embedding_dim=4),
                          GraphSAGE(4, 8, 3))
    _save(whole, host, {"gnn": torch.optim.Adam(host.parameters())}, 1)
    with pytest.raises(CheckpointError, match=r"holds the whole full table \(placement host or "
                                              r"device\); resume it with --emb-placement host "
                                              r"or device"):
        load_checkpoint(whole.path, cfg, None, emb_shards=2)


# ---------------------------------------------------------------- training

@pytest.mark.slow
def test_device_placement_trains_like_host_and_resumes_it(tmp_path):
    # On the CPU the device table runs its own code path (a gather, SparseAdam on the device
    # tensor): the same model, the same numbers.
    host = run(small(tmp_path, "host", emb_placement="host"))
    device = run(small(tmp_path, "device", emb_placement="device"))
    assert metrics(device.output) == metrics(host.output)
    assert (device.test_acc, device.val_acc) == (host.test_acc, host.val_acc)
    assert (host.emb_placement, device.emb_placement) == ("host", "device")
    assert device.emb_placement_reason == "requested"
    assert device.embedding_parameters == device.full_table_parameters == 1500 * 16

    class Stop(Exception):
        pass

    class StopAfterFirstEpoch:
        def on_epoch_end(self, record: EpochRecord) -> None:
            raise Stop

    # emb_placement is a runtime field: a host checkpoint resumes as a device table.
    cfg = small(tmp_path, "switched", emb_placement="host")
    with pytest.raises(Stop):
        Trainer(cfg, torch.device("cpu"), [StopAfterFirstEpoch()]).fit()
    resumed = run(TrainConfig.from_dict({**cfg.to_dict(), "resume": True,
                                         "emb_placement": "device"}))
    assert metrics(resumed.output) == metrics(host.output)
    summary = json.loads((Path(resumed.output) / "summary.json").read_text())
    assert summary["emb_placement"] == "device"


@pytest.mark.slow
def test_auto_on_the_cpu_trains_on_the_host(tmp_path, capsys):
    summary = run(small(tmp_path, "auto", epochs=1))
    assert (summary.emb_placement, summary.emb_placement_reason) == \
        ("host", "auto on the CPU, where the device is the host")
    assert "emb placement: host (auto on the CPU, where the device is the host)" in \
        capsys.readouterr().err
    assert run(small(tmp_path, "tt", emb="tt", epochs=1)).emb_placement is None


def test_refused_placement_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module.FreeMemory, "measure",
                        classmethod(lambda cls, device, processes=1: cls(device, 1000, 1000)))
    cfg = small(tmp_path, "refused", emb_placement="device")
    with pytest.raises(ValueError, match=r"emb_placement 'device' \(requested\) cannot hold the "
                                         r"1,500 x 16 full table: the table and its SparseAdam "
                                         r"state need 288,000 bytes \(281.25 KiB\), 1,000 bytes "
                                         r"\(1000 B\) are free on cpu"):
        run(cfg)
    assert not Path(cfg.output).exists()
    assert main(["--dataset", GRAPH, "--emb", "full", "--emb-placement", "host",
                 "--batch-size", "32", "--output", cfg.output, "--device", "cpu"]) == 1
    assert "gnn-tt train: error: emb_placement 'host' (requested) cannot hold" in \
        capsys.readouterr().err
    assert not Path(cfg.output).exists()
