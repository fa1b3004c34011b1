import json

import pytest

from partition.cli import main


def test_cli_prints_levels_writes_cache_then_hits_it(tmp_path, capsys):
    argv = ["--dataset", "synthetic:nodes=3000,degree=12,classes=6", "--tt-p-shapes",
            "5,10,64", "--seed", "1", "--cache-dir", str(tmp_path / "cache"),
            "--output", str(tmp_path / "stats.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| level | prefix | blocks | edge_cut | share" in out
    assert "| 1     | i1     | 5 " in out and "| 2     | i1,i2  | 50 " in out
    assert "(cached)" not in out
    assert len(list((tmp_path / "cache").glob("rows-hierarchical-*.pt"))) == 1
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert saved["tt_p_shapes"] == [5, 10, 64] and 0 < saved["stats"]["share_i1"] <= 1
    assert main(argv) == 0
    assert "(cached)" in capsys.readouterr().out


def test_cli_rejects_bad_shapes(capsys):
    with pytest.raises(SystemExit):
        main(["--dataset", "synthetic-products", "--tt-p-shapes", "5,x"])
    assert "--tt-p-shapes must be comma-separated ints, got '5,x'" in capsys.readouterr().err
