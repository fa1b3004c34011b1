import csv
import json
from pathlib import Path

import pytest

from gnn_tt.experiments.report import (leaderboard, load_dir, main, make_record, plot_sweep,
                           run_rows, sweep_table, unique_records, write_csv)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config(**kw):
    base = {"dataset": "npz:cora.npz", "model": "gat", "emb": "tt", "tt_rank": 8,
            "partition": "original", "num_parts": None, "tt_p_shapes": [8, 8, 8], "runs": 2,
            "epochs": 3}
    return {**base, **kw}


def _summary(tests, vals, params=100, ratio=50.0):
    mean = lambda xs: sum(xs) / len(xs)
    std = lambda xs: (sum((x - mean(xs)) ** 2 for x in xs) / len(xs)) ** 0.5
    return {"test_acc": {"mean": mean(tests), "std": std(tests), "runs": list(tests)},
            "val_acc": {"mean": mean(vals), "std": std(vals), "runs": list(vals)},
            "embedding_parameters": params, "compression_ratio": ratio, "epoch_seconds": 1.5}


def _records():
    return [
        make_record("a", _config(), _summary([0.5, 0.7], [0.6, 0.6])),
        make_record("b", _config(partition="metis-flat", num_parts=4),
                    _summary([0.8, 0.8], [0.7, 0.9])),
        make_record("c", _config(tt_rank=16), _summary([0.9, 0.75], [0.5, 0.5], 400, 12.5)),
        make_record("d", _config(tt_rank=16, partition="metis-flat", num_parts=4), None,
                    status="failed", error="RuntimeError: boom"),
        make_record("full", _config(emb="full"), _summary([0.65, 0.75], [0.7, 0.7], 5000, 1.0)),
    ]


def test_record_parts():
    assert make_record("h", _config(partition="hierarchical", tt_p_shapes=[5, 30, 30]),
                       _summary([0.5], [0.5]))["parts"] == 5
    full = make_record("f", _config(emb="full", partition="metis-flat", num_parts=4),
                       _summary([0.5], [0.5]))
    assert full["tt_rank"] is None and full["parts"] is None


def test_make_record_rejects_bad_status_and_missing_summary():
    with pytest.raises(ValueError, match="status must be one of .* got 'done'"):
        make_record("x", _config(), _summary([0.5], [0.5]), status="done")
    with pytest.raises(ValueError, match="record 'x' has status 'ok' but no summary"):
        make_record("x", _config(), None)


def test_sweep_table_exact():
    expected = "\n".join([
        "| rank \\ parts | 0 | 4 | reduction vs full |",
        "|---|---|---|---|",
        "| TT rank 8 | 0.6000 ± 0.1000 | 0.8000 ± 0.0000 | 50x |",
        "| TT rank 16 | 0.8250 ± 0.0750 | failed | 12x |",
        "| full table | 0.7000 ± 0.0500 | - | 1x |",
    ])
    assert sweep_table(_records()) == expected


def test_sweep_table_reduction_range_and_missing_cell():
    records = [
        make_record("h5", _config(partition="hierarchical", tt_p_shapes=[5, 30, 30]),
                    _summary([0.5], [0.5], 300, 20.0)),
        make_record("h50", _config(partition="hierarchical", tt_p_shapes=[50, 10, 10]),
                    _summary([0.6], [0.5], 200, 30.0)),
        make_record("r16", _config(tt_rank=16, partition="hierarchical",
                                   tt_p_shapes=[50, 10, 10]), _summary([0.7], [0.5])),
    ]
    lines = sweep_table(records).splitlines()
    assert lines[0] == "| rank \\ parts | 5 | 50 | reduction vs full |"
    assert lines[2] == "| TT rank 8 | 0.5000 ± 0.0000 | 0.6000 ± 0.0000 | 20x - 30x |"
    assert lines[3] == "| TT rank 16 | - | 0.7000 ± 0.0000 | 50x |"


def test_leaderboard_sorted_by_test_mean_without_failed():
    lines = leaderboard(_records()).splitlines()
    names = [line.split("|")[1].strip() for line in lines[2:]]
    assert names == ["c", "b", "full", "a"]  # 0.825, 0.8, 0.7, 0.6
    assert "| c | npz:cora.npz | gat | tt r16 original | 0.8250 ± 0.0750 | " \
           "0.5000 ± 0.0000 | 2 | 400 | 12x |" in lines
    assert "| b | npz:cora.npz | gat | tt r8 metis-flat 4 |" in lines[3]


def test_run_rows_and_csv(tmp_path):
    rows = run_rows(_records())
    # 2 runs each for the 4 finished records, one row for the failed one.
    assert len(rows) == 9
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"] == "RuntimeError: boom"
    write_csv(tmp_path / "x.csv", rows)
    with open(tmp_path / "x.csv") as f:
        back = list(csv.DictReader(f))
    assert [(r["name"], r["run"], r["test_acc"]) for r in back[:2]] == [
        ("a", "0", "0.5"), ("a", "1", "0.7")]
    assert back[6]["run"] == "" and back[6]["error"] == "RuntimeError: boom"


def test_plot_writes_png(tmp_path):
    path = plot_sweep(_records(), tmp_path / "p.png", "title")
    assert path.read_bytes()[:8] == PNG_MAGIC


def _write_run(path: Path, config: dict, summary: dict) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_load_dir_run_and_errors(tmp_path):
    run = _write_run(tmp_path / "run1", _config(tt_rank=32), _summary([0.4], [0.3]))
    title, records, is_sweep = load_dir(run)
    assert (title, is_sweep) == ("run1", False)
    assert records[0]["tt_rank"] == 32 and records[0]["test_acc"]["runs"] == [0.4]
    with pytest.raises(FileNotFoundError, match="neither a sweep directory"):
        load_dir(tmp_path)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "summary.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_dir(tmp_path / "half")


def test_main_renders_sweep_and_runs(tmp_path, capsys):
    records = _records()
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "sweep.json").write_text(json.dumps({
        "sweep": {"method": "metis-flat"}, "base": _config(), "cells": records}))
    run = _write_run(tmp_path / "run1", _config(tt_rank=32, partition="metis-flat",
                                                num_parts=4), _summary([0.95], [0.9]))
    out = tmp_path / "out"
    assert main([str(sweep_dir), str(run), "--output", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert sweep_table(records) in text
    assert "| TT rank 32 | 0.9500 ± 0.0000 | 50x |" in text  # the loose run's own grid
    assert "- `d`: RuntimeError: boom" in text
    assert "## Leaderboard over all directories" in text
    assert text in capsys.readouterr().out
    assert (out / "sweep0.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "runs.png").read_bytes()[:8] == PNG_MAGIC
    data = json.loads((out / "report.json").read_text())
    assert len(data["cells"]) == 6 and len(data["runs"]) == 10
    with open(out / "report.csv") as f:
        assert len(list(csv.DictReader(f))) == 10


def test_unique_records_drops_repeats_of_one_training():
    records = _records()
    copy = {**records[0], "name": "a-copy", "output": "elsewhere"}  # a shared, copied cell
    other_seed = make_record("a2", _config(), _summary([0.5, 0.71], [0.6, 0.6]))
    assert [r["name"] for r in unique_records([*records, copy, other_seed])] == [
        "a", "b", "c", "d", "full", "a2"]


def test_load_dir_names_what_is_wrong_with_a_sweep_json(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    good = {"sweep": {"method": "metis-flat"}, "base": _config(), "cells": _records()}
    for data, message in (([], "must hold a JSON object, got list"),
                          ({**good, "cells": None}, "no 'cells' list"),
                          ({**good, "sweep": {}}, "no 'sweep' object with a 'method'"),
                          ({**good, "cells": [{"name": "a", "status": "ok"}]},
                           r"cell 0 is not a sweep record \(missing \['error', 'dataset'")):
        (sweep / "sweep.json").write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message):
            load_dir(sweep)
    (sweep / "sweep.json").write_text(json.dumps(good))
    assert load_dir(sweep)[1] == _records()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dir(tmp_path / "missing")
