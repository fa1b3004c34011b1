import json
import sys

import pytest

from gnn_tt.bench.csr import main

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads the peak RSS from /proc/self")


def test_bench_reports_each_stage_per_directed_edge(tmp_path, capsys):
    out = tmp_path / "csr.json"
    assert main(["--random", "3000:20000", "--synthetic", "nodes=3000,degree=8",
                 "--output", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["graph"], r["stage"]) for r in rows] == [
        ("random:3000:20000", "csr"), ("nodes=3000,degree=8", "generate"),
        ("nodes=3000,degree=8", "csr")]
    # The csr row of the synthetic graph rebuilds the generated graph from its edge list.
    assert rows[1]["directed_edges"] == rows[2]["directed_edges"] == 3000 * 8
    assert rows[1]["nodes"] == rows[2]["nodes"] == 3000
    assert 39_000 < rows[0]["directed_edges"] <= 40_000  # symmetrized, a few pairs repeat
    for r in rows:
        assert r["B_per_edge"] * r["directed_edges"] == pytest.approx(r["peak_GB"] * 1e9)
        assert r["beyond_output_B_per_edge"] < r["B_per_edge"]
        assert r["output_GB"] > 0 and r["cpu_seconds"] > 0
    assert "beyond_output_B_per_edge" in capsys.readouterr().out


@pytest.mark.parametrize("args, match", [
    (["--random", "10x"], "--random '10x' is not NODES:EDGES"),
    (["--synthetic", "colour=3"], "--synthetic 'colour=3'"),
])
def test_bench_rejects_bad_graphs(args, match, capsys):
    assert main(args) == 2
    assert match in capsys.readouterr().err
