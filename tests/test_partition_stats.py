import math
from collections import Counter

import numpy as np
import pytest
import torch

from gnn_tt.data.graph import CSRGraph
from partition.stats import assignment_stats


@pytest.mark.parametrize("p", [(5, 12), (3, 4, 5), (2, 3, 2, 5)])
def test_stats_match_brute_force_loops(p):
    rng = np.random.default_rng(sum(p))
    n = 55
    raw = rng.integers(0, n, (2, 160))
    graph = CSRGraph.from_edge_index(torch.from_numpy(raw), n)
    rows = rng.permutation(math.prod(p))[:n]
    labels = rng.integers(-1, 4, n)  # -1: unlabelled
    stats = assignment_stats(graph.rowptr.numpy(), graph.col.numpy(), rows, p, labels)

    edges = {(min(a, b), max(a, b)) for a, b in raw.T.tolist() if a != b}
    assert stats["num_edges"] == len(edges)
    for level in range(1, len(p)):
        size = math.prod(p[level:])
        cut = sum(rows[a] // size != rows[b] // size for a, b in edges)
        assert stats["edge_cut"][level - 1] == cut
        assert stats["share"][level - 1] == pytest.approx(1 - cut / len(edges))
        blocks: dict[int, Counter] = {}
        for v in range(n):
            if labels[v] >= 0:
                blocks.setdefault(rows[v] // size, Counter())[labels[v]] += 1
        majority = sum(c.most_common(1)[0][1] for c in blocks.values())
        assert stats["purity"][level - 1] == pytest.approx(majority / (labels >= 0).sum())
    assert stats["share_i1"] == stats["share"][0]
    assert ("share_i12" in stats) == (len(p) >= 3)
    assert stats["purity_i1"] == stats["purity"][0]


def test_no_labels_no_purity_and_empty_graph():
    graph = CSRGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 4)
    stats = assignment_stats(graph.rowptr.numpy(), graph.col.numpy(), np.arange(4), (2, 2))
    assert stats["num_edges"] == 0 and stats["edge_cut"] == [0]
    assert math.isnan(stats["share_i1"]) and "purity" not in stats
