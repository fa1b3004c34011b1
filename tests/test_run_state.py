import torch

from gnn_tt.training.run_state import EpochRecord, RunState


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
