import json
import math

import pytest
import torch

from gnn_tt.data import load_dataset
from partition.cli import main
from partition.stats import assignment_stats

DATASET = "synthetic:nodes=3000,degree=12,classes=6"
P_SHAPES = (5, 10, 64)


def printed_table(text: str) -> list[dict[str, str]]:
    """The cells of the first markdown table in ``text``, one dict per body row."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, body = cells[0], cells[2:]  # cells[1] is the |---| separator
    return [dict(zip(header, row)) for row in body]


def test_cli_prints_the_stats_of_the_assignment_it_caches(tmp_path, capsys):
    argv = ["--dataset", DATASET, "--tt-p-shapes", ",".join(map(str, P_SHAPES)), "--seed", "1",
            "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "stats.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(cached)" not in out
    (cached,) = (tmp_path / "cache").glob("rows-hierarchical-*.pt")
    rows = torch.load(cached, weights_only=True)["row_of_node"]
    # The same assignment's quality, computed here from the dataset's own graph and labels.
    ds = load_dataset(DATASET)
    want = assignment_stats(ds.graph.rowptr.numpy(), ds.graph.col.numpy(), rows.numpy(),
                            P_SHAPES, ds.y.numpy().reshape(-1))
    levels = len(P_SHAPES) - 1
    assert printed_table(out) == [
        {"level": str(level + 1), "prefix": ",".join(f"i{j + 1}" for j in range(level + 1)),
         "blocks": str(math.prod(P_SHAPES[:level + 1])), "edge_cut": str(want["edge_cut"][level]),
         "share": f"{want['share'][level]:.4g}", "purity": f"{want['purity'][level]:.4g}"}
        for level in range(levels)]
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert saved["tt_p_shapes"] == list(P_SHAPES)
    for key in ("num_edges", "edge_cut", "share", "purity"):
        assert saved["stats"][key] == pytest.approx(want[key]), key
    # A second run reads the assignment back from the cache and prints the same table.
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "(cached)" in again and printed_table(again) == printed_table(out)
    assert list((tmp_path / "cache").glob("rows-hierarchical-*.pt")) == [cached]


def test_cli_rejects_bad_shapes(capsys):
    with pytest.raises(SystemExit):
        main(["--dataset", "synthetic-products", "--tt-p-shapes", "5,x"])
    assert "--tt-p-shapes must be comma-separated ints, got '5,x'" in capsys.readouterr().err
