import collections
import io
import math
import random
import statistics
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import gnn_tt.training.checkpoint as checkpoint_module
from gnn_tt import TTEmbedding
from gnn_tt.training.checkpoint import (CheckpointError, Checkpointer, load_checkpoint, rng_state,
                                        save_checkpoint, set_rng_state)
from gnn_tt.training.config import TrainConfig
from gnn_tt.training.run_state import EpochRecord, RunState
from gnn_tt.training.summary import RunResult

FUZZ_COPIES = 400


def _draws() -> tuple:
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)])


def _state(config: TrainConfig, digest: str | None) -> dict:
    """What Checkpointer.save writes after epoch 4 of run 1 (of ``config.epochs`` >= 4)."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    history = [EpochRecord(run, epoch, 1.0, 0.5) for run in (0, 1) for epoch in range(4)]
    return {"config": config.to_dict(), "row_assignment_hash": digest, "run": 1, "epoch": 4,
            "model": model.state_dict(), "optimizers": {"gnn": opt.state_dict()},
            "rng": [rng_state()], "run_state": RunState(0.5, 0.25, 3, [0.5] * 4).to_dict(),
            "finished_runs": [RunResult(0, 0, 0.5, 0.25, 3, 0.5).to_dict()],
            "history": [r.to_dict() for r in history], "elapsed_seconds": 4.0}


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
    assert (loaded["run"], loaded["epoch"]) == (1, 4)
    assert loaded["run_state"] == state["run_state"] and loaded["history"] == state["history"]
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


@pytest.mark.parametrize("change, reason", [
    (lambda s: s.pop("history"), r"no 'history'"),
    (lambda s: s.update(run="1"), r"'run' is not of type int"),
    (lambda s: s.update(epoch=True), r"'epoch' is not of type int"),
    (lambda s: s.update(model={"weight": [1.0]}),
     r"'model' is not of type dict\[str, torch.Tensor\]"),
    (lambda s: s.update(elapsed_seconds="4.0"), r"'elapsed_seconds' is not of type float"),
    (lambda s: s.update(config={"hidden": -1}), r"config: "),
    (lambda s: s.update(epoch=6), r"run 1, epoch 6: need run >= 0 and 0 <= epoch <= 5"),
    (lambda s: s.update(finished_runs=[]), r"0 finished runs before run 1"),
    (lambda s: s["finished_runs"][0].update(val=0.5),
     r"finished_runs\[0\]: not RunResult fields"),
    (lambda s: s["history"][2].update(run=None),
     r"history\[2\]: EpochRecord fields of the wrong type: \['run'\]"),
    (lambda s: s["history"][3].update(nothing=1), r"history\[3\]: not EpochRecord fields"),
    (lambda s: s.update(run_state={}), r"run_state: 0 epoch times after 4 epochs"),
    (lambda s: s["run_state"].update(best_model=[1.0]),
     r"run_state: RunState fields of the wrong type: \['best_model'\]"),
    (lambda s: s.update(rng=[]), r"no RNG state"),
    (lambda s: s["rng"][0].update(torch=torch.zeros(3, dtype=torch.uint8)),
     r"rng\[0\]: RuntimeError"),
    (lambda s: s["rng"][0].update(python=(3, (1, 2), None)), r"rng\[0\]: ValueError"),
    (lambda s: s["rng"][0].update(numpy=("MT19937", [1, 2], 0, 0, 0.0)),
     r"rng\[0\]: AttributeError"),
    (lambda s: s["optimizers"]["gnn"].update(param_groups=[{"lr": 0.1}]),
     r"optimizer 'gnn': its 'param_groups' are not dicts holding 'params' lists"),
])
def test_contents_not_as_saved_are_corrupt(tmp_path, change, reason):
    # Checkpoints whose bytes are intact but whose contents resuming could not use (another
    # writer, another version): refused where they are read, not deep inside the resume.
    cfg = TrainConfig(epochs=5)
    state = _state(cfg, "h")
    change(state)
    path = save_checkpoint(tmp_path / "ckpt.pt", state)
    with pytest.raises(CheckpointError, match=r"'.*ckpt.pt' is corrupt or unreadable \(" + reason):
        load_checkpoint(path, cfg, "h")


def test_flipped_tensor_byte_is_detected(tmp_path):
    # torch.load does not check the records' CRC-32: without load_checkpoint's own check this
    # file loads, with one weight changed.
    cfg = TrainConfig(epochs=5)
    path = save_checkpoint(tmp_path / "ckpt.pt", _state(cfg, "h"))
    data = bytearray(path.read_bytes())
    weight = torch.load(path, weights_only=True)["model"]["weight"]
    offset = bytes(data).find(weight.numpy().tobytes())
    assert offset > 0
    data[offset + 1] ^= 0x10
    path.write_bytes(bytes(data))
    assert not torch.equal(torch.load(path, weights_only=True)["model"]["weight"], weight)
    with pytest.raises(CheckpointError, match=r"corrupt or unreadable \(BadZipFile: record "
                                              r"'.*data/\d+' fails its CRC-32 check\)"):
        load_checkpoint(path, cfg, "h")


def test_fewer_rng_states_than_ranks(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=5)
    path = save_checkpoint(tmp_path / "ckpt.pt", _state(cfg, "h"))
    monkeypatch.setattr(checkpoint_module.dist, "world_size", lambda: 2)
    with pytest.raises(CheckpointError, match=r"holds the RNG states of 1 ranks but this job has "
                                              r"2; resume with at most 1 processes"):
        load_checkpoint(path, cfg, "h")


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


# --- damaged files ---------------------------------------------------------------------------

def _real_checkpoint(out: Path) -> tuple[Path, TrainConfig, str]:
    """A checkpoint as training writes it (Checkpointer.save): a TT embedding and a linear
    layer after one Adam step each, in the middle of the second of two runs."""
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2)
    model = torch.nn.ModuleDict({"emb": TTEmbedding(60, 12, 2, [3, 4, 5], [2, 2, 3]),
                                 "gnn": torch.nn.Linear(12, 3)})
    optimizers = {"gnn": torch.optim.Adam(model["gnn"].parameters()),
                  "emb": torch.optim.Adam(model["emb"].parameters())}
    model["gnn"](model["emb"](torch.arange(10))).sum().backward()
    for opt in optimizers.values():
        opt.step()
    history = [EpochRecord(0, 0, 1.0, 1.5, 0.5, 0.25, 0.5), EpochRecord(0, 1, 0.75, 1.25),
               EpochRecord(1, 0, 0.875, 1.0, 0.5, 0.375, 0.25)]
    checkpointer = Checkpointer(out, cfg, "0123456789abcdef")
    checkpointer.save(1, 1, model, optimizers, RunState(0.5, 0.375, 0, [1.0]),
                      [RunResult(0, 0, 0.5, 0.25, 0, 1.375)], history, 12.5)
    return checkpointer.path, cfg, "0123456789abcdef"


def _regions(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges to damage: the whole file, each zip record (local header and payload:
    data.pkl, the tensors' data/N, the version records) and the central directory."""
    regions, end = [(0, len(data))], 0
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
            end = info.header_offset + 30 + name_len + extra_len + info.compress_size
            regions.append((info.header_offset, end))
    return regions + [(end, len(data))]


def _damage(data: bytes, rng: random.Random, regions: list[tuple[int, int]]
            ) -> tuple[str, bytes]:
    """One damaged copy of ``data``: bits flipped, the tail cut off, a run of bytes zeroed or
    a block duplicated, at an offset inside a random one of ``regions``."""
    low, high = rng.choice(regions)
    offset, length = rng.randrange(low, high), rng.randint(1, 64)
    out, kind = bytearray(data), rng.choice(["flip", "truncate", "zero", "duplicate"])
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            out[min(offset + rng.randrange(8), len(out) - 1)] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del out[offset:]
    elif kind == "zero":
        out[offset:offset + length] = bytes(len(out[offset:offset + length]))
    else:  # a copy of the block at a random offset, inserted at the damaged one
        source = rng.randrange(len(data))
        out[offset:offset] = data[source:source + length]
    return kind, bytes(out)


def _equal(a, b) -> bool:
    """Exact equality of nested checkpoint values: same types, tensors equal in dtype, shape
    and every element."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_damaged_checkpoints_load_intact_or_raise_corrupt(tmp_path):
    path, cfg, digest = _real_checkpoint(tmp_path)
    data = path.read_bytes()
    original = load_checkpoint(path, cfg, digest)
    assert _equal(original, torch.load(path, weights_only=True))
    rng, outcomes, regions = random.Random(0), collections.Counter(), _regions(data)
    for _ in range(FUZZ_COPIES):
        kind, damaged = _damage(data, rng, regions)
        path.write_bytes(damaged)
        try:
            loaded = load_checkpoint(path, cfg, digest)
        except CheckpointError as err:
            assert f"checkpoint {str(path)!r} is corrupt or unreadable" in str(err), (kind, err)
            outcomes["corrupt"] += 1
        else:
            # Damage in bytes that nothing reads or checks (timestamps, padding): the same
            # state.
            assert _equal(loaded, original), kind
            outcomes["intact"] += 1
    assert outcomes["corrupt"] > FUZZ_COPIES // 2 and outcomes["intact"] > 0, outcomes


def _with_pickle(data: bytes, pickle: bytes) -> bytes:
    """The checkpoint archive ``data`` with its ``data.pkl`` record replaced by ``pickle``,
    every record with a valid CRC-32: damage that happened before the checksums were made."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, pickle if name.endswith("/data.pkl") else src.read(name))
    return out.getvalue()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # a damaged protocol byte
def test_damaged_pickle_raises_checkpoint_error_or_loads_usable_records(tmp_path):
    # Past the checksums, the unpickler and the checks of the contents stand alone: nothing
    # but a CheckpointError escapes, and what loads rebuilds the records resuming reads.
    path, cfg, digest = _real_checkpoint(tmp_path)
    data = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickle = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    rng, outcomes = random.Random(1), collections.Counter()
    for _ in range(FUZZ_COPIES):
        kind, damaged = _damage(pickle, rng, [(0, len(pickle))])
        path.write_bytes(_with_pickle(data, damaged))
        try:
            loaded = load_checkpoint(path, cfg, digest)
        except CheckpointError as err:
            assert f"checkpoint {str(path)!r} " in str(err), (kind, err)
            outcomes["corrupt" if "corrupt or unreadable" in str(err) else "refused"] += 1
        else:
            for record in loaded["history"]:
                EpochRecord.from_dict(record).line()
            assert loaded["run"] == len(loaded["finished_runs"])
            assert all(RunResult.from_dict(r).to_dict() == r for r in loaded["finished_runs"])
            assert math.isfinite(statistics.fmean(RunState.from_dict(
                loaded["run_state"]).epoch_seconds + [0.0]))
            outcomes["loaded"] += 1
    assert outcomes["corrupt"] > FUZZ_COPIES // 2 and outcomes["loaded"] > 0, outcomes
