import json
import math

import pytest

from gnn_tt.bench.partition import PRODUCTS_NODES, PRODUCTS_P, main, parse_size


def test_parse_size():
    assert parse_size("products") == (PRODUCTS_NODES, PRODUCTS_P)
    n, p = parse_size("100k")
    assert n == 100_000 and len(p) == 3 and 1.05 * n <= math.prod(p) <= 1.07 * n
    assert parse_size("5000")[0] == 5000
    with pytest.raises(ValueError, match="unknown size '10x'"):
        parse_size("10x")
    with pytest.raises(ValueError, match="needs >= 2 nodes, got 1"):
        parse_size("1")


def test_bench_runs_a_small_size_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--sizes", "3000", "--output", str(out)]) == 0
    assert "| nodes | edges | p " in capsys.readouterr().out
    row = json.loads(out.read_text())["rows"][0]
    assert row["nodes"] == 3000 and row["p"] == "x".join(map(str, parse_size("3000")[1]))
    assert row["peak_rss_GB"] > 0 and 0 < row["share_i12"] < row["share_i1"] <= 1
