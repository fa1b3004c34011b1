import json

import pytest

from gnn_tt.training.summary import AccuracyStats, RunResult, TrainSummary, format_summary


def _summary() -> TrainSummary:
    runs = [RunResult(0, 0, 0.5, 0.4, 3, 1.5), RunResult(1, 1, 0.7, 0.6, 2, 2.5, 0.75, 0.65)]
    return TrainSummary(
        test_acc=AccuracyStats.of([0.4, 0.6]), val_acc=AccuracyStats.of([0.5, 0.7]),
        embedding_parameters=100, compression_ratio=25.0, epoch_seconds=2.0, dataset="d",
        model="sage", emb="tt", runs=runs, full_table_parameters=2500, gnn_parameters=10,
        tt_p_shapes=(5, 5, 5), tt_q_shapes=(2, 2, 4), partition_stats={"cut": 3},
        row_assignment_hash="ab", peak_memory_bytes=7, world_size=1, device="cpu",
        eval_seconds=0.25, total_seconds=9.0, dataset_summary={"num_nodes": 125}, output="out")


def test_accuracy_stats_use_the_sample_std():
    assert AccuracyStats.of([0.4, 0.6]) == AccuracyStats(0.5, pytest.approx(0.1414, abs=1e-4),
                                                          [0.4, 0.6])
    assert AccuracyStats.of([0.3]) == AccuracyStats(0.3, 0.0, [0.3])


def test_json_round_trip():
    summary = _summary()
    data = json.loads(json.dumps(summary.to_dict()))
    assert TrainSummary.from_dict(data) == summary
    # Without layer-wise inference a run has no sampled_* keys.
    assert set(data["runs"][0]) == {"run", "seed", "val_acc", "test_acc", "best_epoch",
                                    "epoch_seconds"}
    assert data["runs"][1]["sampled_test_acc"] == 0.65
    assert data["tt_p_shapes"] == [5, 5, 5]


def test_from_dict_with_only_the_report_fields():
    data = {k: v for k, v in _summary().to_dict().items()
            if k in ("test_acc", "val_acc", "embedding_parameters", "compression_ratio",
                     "epoch_seconds")}
    summary = TrainSummary.from_dict(data)
    assert (summary.runs, summary.tt_p_shapes, summary.dataset) == ([], None, None)


def test_from_dict_names_unknown_and_missing_keys():
    data = _summary().to_dict()
    with pytest.raises(ValueError, match=r"'TrainSummary': unknown keys \['accuracy'\], "
                                         r"missing required keys \['test_acc'\]"):
        TrainSummary.from_dict({**{k: v for k, v in data.items() if k != "test_acc"},
                                "accuracy": 0.5})
    with pytest.raises(ValueError, match=r"'AccuracyStats': unknown keys \[\], missing required "
                                         r"keys \['runs'\]"):
        TrainSummary.from_dict({**data, "val_acc": {"mean": 0.5, "std": 0.0}})


def test_format_summary():
    text = format_summary(_summary())
    assert "0.5000 ± 0.1414" in text and "25.0x smaller" in text and "output: out" in text
    cells = _cells(text)
    assert (cells["epoch_s"], cells["eval_s"], cells["total_s"]) == ("2", "0.25", "9")
    no_eval = TrainSummary.from_dict({**_summary().to_dict(), "eval_seconds": None})
    assert _cells(format_summary(no_eval))["eval_s"] == "-"


def _cells(table: str) -> dict[str, str]:
    """Column -> value of the one row of a :func:`format_summary` table."""
    header, _, row = table.splitlines()[:3]
    return dict(zip((c.strip() for c in header.split("|")), (c.strip() for c in row.split("|"))))


def test_comm_bytes_round_trip_and_column():
    summary = TrainSummary.from_dict({
        **_summary().to_dict(), "comm_bytes_per_step": 3.5e6,
        "comm_bytes_by_kind": {"ddp_all_reduce": 2.5e6, "table_all_to_all": 1e6},
        "comm_wire_bytes_per_step": 3e6})
    assert TrainSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary
    assert _cells(format_summary(summary))["comm_MB_per_step"] == "3.5"
    assert _cells(format_summary(_summary()))["comm_MB_per_step"] == "-"
