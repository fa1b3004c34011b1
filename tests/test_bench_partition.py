import json
import math

import pytest

from gnn_tt.bench.partition import PRODUCTS_NODES, PRODUCTS_P, main, parse_size
from gnn_tt.common.table import format_table
from gnn_tt.data.synthetic import synthetic_graph
from partition import assign_rows


def test_parse_size():
    assert parse_size("products") == (PRODUCTS_NODES, PRODUCTS_P)
    n, p = parse_size("100k")
    assert n == 100_000 and len(p) == 3 and 1.05 * n <= math.prod(p) <= 1.07 * n
    assert parse_size("5000")[0] == 5000
    with pytest.raises(ValueError, match="unknown size '10x'"):
        parse_size("10x")
    with pytest.raises(ValueError, match="needs >= 2 nodes, got 1"):
        parse_size("1")


def test_bench_reports_the_assignment_of_the_generated_graph(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--sizes", "3000", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [row["method"] for row in rows] == ["hierarchical", "multilevel"]
    nodes, p = parse_size("3000")
    # The workers' figures are those of the same seeded graph and assignments built here.
    ds = synthetic_graph(nodes=nodes, seed=0)
    shares = {}
    for row in rows:
        assert row["nodes"] == nodes and row["p"] == "x".join(map(str, p))
        stats = assign_rows(ds.graph, nodes, p, method=row["method"], seed=0,
                            labels=ds.y).stats
        assert row["edges"] == stats["num_edges"] == ds.graph.num_edges // 2
        assert row["cut_i1"] == stats["edge_cut"][0] and row["moved"] == stats["moved"]
        for key in ("share_i1", "share_i12", "purity_i1"):
            assert row[key] == pytest.approx(stats[key]), key
        assert row["peak_rss_GB"] > 0 and row["cpu_seconds"] > 0
        assert row["B_per_edge"] == pytest.approx(row["peak_rss_GB"] * 1e9
                                                  / ds.graph.num_edges)
        assert 0 < row["extra_B_per_edge"] < row["B_per_edge"]
        shares[row["method"]] = stats
    for key, name in (("share_i1", "i1_vs_h"), ("share_i12", "i12_vs_h")):
        assert rows[0][name] == 1.0
        assert rows[1][name] == pytest.approx(shares["multilevel"][key]
                                              / shares["hierarchical"][key])
    # The printed table shows the JSON's values.
    header = next(line for line in printed.splitlines() if line.startswith("| nodes "))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert format_table(rows, columns) in printed


def test_bench_rejects_unknown_methods(capsys):
    assert main(["--sizes", "3000", "--methods", "hierarchical,spectral"]) == 2
    assert "unknown method(s) spectral" in capsys.readouterr().err
