import json
import math

import pytest

from gnn_tt.bench.partition import PRODUCTS_NODES, PRODUCTS_P, balanced_p, main, parse_size


@pytest.mark.parametrize("n", [2, 1000, 100_000, 1_000_000, 2_449_029])
def test_balanced_p_has_about_five_percent_slack(n):
    p = balanced_p(n)
    assert 1.05 * n <= math.prod(p) <= 1.05 * n + 2 * p[0] * p[1]
    assert max(p) - min(p) <= 2


def test_parse_size():
    assert parse_size("products") == (PRODUCTS_NODES, PRODUCTS_P)
    assert parse_size("100k") == (100_000, balanced_p(100_000))
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
    assert row["nodes"] == 3000 and row["p"] == "x".join(map(str, balanced_p(3000)))
    assert row["peak_rss_GB"] > 0 and 0 < row["share_i12"] < row["share_i1"] <= 1
