import pytest

from gnn_tt.training.callbacks import FAIL_ENV, FailAfterEpoch, env_callbacks


def test_fail_after_epoch_from_env(monkeypatch):
    monkeypatch.delenv(FAIL_ENV, raising=False)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert FailAfterEpoch.from_env() is None and env_callbacks() == []
    monkeypatch.setenv(FAIL_ENV, "1:3")
    assert env_callbacks() == [FailAfterEpoch(rank=1, epoch=3)]
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # the restarted job finishes
    assert env_callbacks() == []
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    monkeypatch.setenv(FAIL_ENV, "1")
    with pytest.raises(ValueError, match=r"GNN_TT_FAIL_AFTER_EPOCH must be RANK:EPOCH, "
                                         r"got '1'"):
        FailAfterEpoch.from_env()
