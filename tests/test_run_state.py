import torch

from gnn_tt.training.run_state import EpochRecord, RunState, mean_comm_bytes


def test_epoch_record_keys_and_line():
    trained = EpochRecord(run=1, epoch=2, loss=0.5, epoch_seconds=1.25)
    assert trained.to_dict() == {"run": 1, "epoch": 2, "loss": 0.5, "epoch_seconds": 1.25}
    assert trained.line() == "run 1 epoch 2: loss 0.5000, 1.25 s"
    evaluated = EpochRecord(1, 3, 0.25, 1.0, val_acc=0.5, test_acc=0.75)
    assert EpochRecord.from_dict(evaluated.to_dict()) == evaluated
    assert evaluated.line().endswith(", val 0.5000, test 0.7500")


def test_epoch_record_keeps_the_evaluation_seconds_apart():
    timed = EpochRecord(1, 3, 0.25, 1.0, val_acc=0.5, test_acc=0.75, eval_seconds=0.5)
    assert timed.to_dict() == {"run": 1, "epoch": 3, "loss": 0.25, "epoch_seconds": 1.0,
                               "val_acc": 0.5, "test_acc": 0.75, "eval_seconds": 0.5}
    assert EpochRecord.from_dict(timed.to_dict()) == timed
    assert timed.line() == "run 1 epoch 3: loss 0.2500, 1.00 s, val 0.5000, test 0.7500 " \
                           "(eval 0.50 s)"


def test_run_state_keeps_the_first_best_epoch():
    state = RunState()
    assert state.improve(0, 0.0, 0.1)  # any accuracy beats the initial best
    assert state.improve(1, 0.5, 0.4)
    assert not state.improve(2, 0.5, 0.9)  # a tie keeps the earlier epoch
    assert not state.improve(3, 0.3, 0.9)
    assert (state.best_val, state.best_test, state.best_epoch) == (0.5, 0.4, 1)


def test_run_state_round_trip_through_a_weights_only_file(tmp_path):
    state = RunState(0.5, 0.4, 1, [1.0, 2.0], {"w": torch.ones(2)})
    torch.save(state.to_dict(), tmp_path / "state.pt")
    back = RunState.from_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert (back.best_val, back.best_test, back.best_epoch, back.epoch_seconds) == \
        (0.5, 0.4, 1, [1.0, 2.0])
    assert torch.equal(back.best_model["w"], torch.ones(2))
    assert state.to_dict()["best_model"] is state.best_model  # no copy of a large state


def test_epoch_record_keeps_the_bytes_per_step():
    sent = {"ddp_all_reduce": 2.5e6, "ddp_broadcast": 0.0, "table_all_gather": 0.0,
            "table_all_to_all": 1e6}
    record = EpochRecord(0, 1, 0.5, 2.0, comm_bytes_per_step=sent)
    assert record.to_dict()["comm_bytes_per_step"] == sent
    assert EpochRecord.from_dict(record.to_dict()) == record
    assert record.line() == "run 0 epoch 1: loss 0.5000, 2.00 s, 3.500 MB to collectives per step"
    # One process: all zero, nothing said.
    alone = EpochRecord(0, 1, 0.5, 2.0, comm_bytes_per_step=dict.fromkeys(sent, 0.0))
    assert alone.line() == "run 0 epoch 1: loss 0.5000, 2.00 s"


def test_mean_comm_bytes_skips_records_without_a_count():
    history = [EpochRecord(0, 0, 1.0, 1.0),  # written before the bytes were counted
               EpochRecord(0, 1, 1.0, 1.0, comm_bytes_per_step={"ddp_all_reduce": 10.0}),
               EpochRecord(0, 2, 1.0, 1.0, comm_bytes_per_step={"ddp_all_reduce": 20.0})]
    assert mean_comm_bytes(history) == {"ddp_all_reduce": 15.0}
    assert mean_comm_bytes(history[:1]) == {}
