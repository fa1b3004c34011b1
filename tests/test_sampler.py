import itertools
import math

import pytest
import torch
from scipy import stats

from gnn_tt.data import CSRGraph
from gnn_tt.sampling import Block, MiniBatch, NeighborSampler


def random_graph(num_nodes: int = 60, num_edges: int = 400, seed: int = 0) -> CSRGraph:
    gen = torch.Generator().manual_seed(seed)
    return CSRGraph.from_edge_index(torch.randint(0, num_nodes, (2, num_edges), generator=gen),
                                    num_nodes)


def neighbour_sets(graph: CSRGraph) -> list[set[int]]:
    rowptr, col = graph.rowptr.tolist(), graph.col.tolist()
    return [set(col[rowptr[v]:rowptr[v + 1]]) for v in range(graph.num_nodes)]


def disjoint_stars(num_stars: int, leaves: int) -> CSRGraph:
    """Star s has centre s * (leaves + 1) and leaves centre + 1 .. centre + leaves."""
    centre = torch.arange(num_stars).repeat_interleave(leaves) * (leaves + 1)
    leaf = centre + torch.arange(1, leaves + 1).repeat(num_stars)
    return CSRGraph.from_edge_index(torch.stack([centre, leaf]), num_stars * (leaves + 1))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def global_edges(batch: MiniBatch, block: Block) -> tuple[list[int], list[int]]:
    return batch.n_id[block.edge_index[0]].tolist(), batch.n_id[block.edge_index[1]].tolist()


@pytest.mark.parametrize("fanouts", [[3], [4, 2], [12, 9], [2, -1, 3], [-1, -1], [1, 1, 1, 1]])
def test_blocks_hold_real_distinct_edges_with_the_right_counts(fanouts):
    graph = random_graph()
    adj = neighbour_sets(graph)
    seeds = torch.tensor([5, 0, 17, 33, 59])
    batch = NeighborSampler(graph, fanouts).sample(seeds, seeded(1))
    assert batch.batch_size == 5 and len(batch.blocks) == len(fanouts)
    # blocks[-1] is the hop out from the seeds, so it uses fanouts[0].
    for block, fanout in zip(reversed(batch.blocks), fanouts):
        src, dst = global_edges(batch, block)
        drawn: dict[int, list[int]] = {}
        for s, d in zip(src, dst):
            assert s in adj[d], f"sampled edge {d} -> {s} is not in the graph"
            drawn.setdefault(d, []).append(s)
        for d in batch.n_id[:block.num_dst].tolist():
            got = drawn.get(d, [])
            assert len(got) == len(set(got)), f"node {d} drew a neighbour twice: {got}"
            want = len(adj[d]) if fanout == -1 else min(len(adj[d]), fanout)
            assert len(got) == want
            if fanout == -1:
                assert set(got) == adj[d]


def test_layout_relabelling_and_first_occurrence_order():
    graph = random_graph(seed=3)
    seeds = torch.tensor([9, 2, 41])
    # Fanouts around the mean degree (~13): rows that keep all and rows that draw mix.
    batch = NeighborSampler(graph, [14, 11, 2]).sample(seeds, seeded(7))
    n_id = batch.n_id.tolist()
    assert n_id[:3] == [9, 2, 41] and len(set(n_id)) == len(n_id)
    assert batch.n_id.dtype == torch.long
    assert batch.blocks[-1].num_dst == 3 and batch.blocks[0].num_src == len(n_id)
    for inner, outer in zip(batch.blocks[1:], batch.blocks[:-1]):
        assert outer.num_dst == inner.num_src  # blocks chain layer to layer
    # Oracle: walk the hops from the seeds; new sources get the next local id in the order
    # they first appear among the edges (which are grouped by destination).
    order = n_id[:3]
    for block in reversed(batch.blocks):
        ei = block.edge_index
        assert ei.dtype == torch.long
        assert int(ei[0].max()) < block.num_src and int(ei[1].max()) < block.num_dst
        dst = ei[1].tolist()
        runs = [d for i, d in enumerate(dst) if i == 0 or dst[i - 1] != d]
        assert len(runs) == len(set(dst))  # each destination's edges are contiguous
        assert block.num_dst == len(order)
        for s in batch.n_id[ei[0]].tolist():
            if s not in order:
                order.append(s)
        assert block.num_src == len(order)
    assert order == n_id


def test_floyd_subsets_are_uniform():
    # 3 of 6 leaves per star: all C(6, 3) = 20 subsets must be equally likely.
    leaves, fanout, stars = 6, 3, 3000
    graph = disjoint_stars(stars, leaves)
    centres = torch.arange(stars) * (leaves + 1)
    batch = NeighborSampler(graph, [fanout]).sample(centres, seeded(11))
    src, dst = global_edges(batch, batch.blocks[0])
    subsets: dict[int, list[int]] = {}
    for s, d in zip(src, dst):
        subsets.setdefault(d, []).append(s - d)  # leaf index 1..6
    index = {c: i for i, c in enumerate(itertools.combinations(range(1, leaves + 1), fanout))}
    counts = [0] * math.comb(leaves, fanout)
    for got in subsets.values():
        counts[index[tuple(sorted(got))]] += 1
    assert sum(counts) == stars
    assert stats.chisquare(counts).pvalue > 1e-3
    # Each leaf appears in half of the subsets.
    leaf_counts = [sum(c for sub, c in zip(index, counts) if leaf in sub)
                   for leaf in range(1, leaves + 1)]
    assert stats.chisquare(leaf_counts).pvalue > 1e-3


def test_floyd_is_unskewed_for_huge_degrees():
    # float32 uniforms would only reach multiples of ~2^6 here (all even offsets); the
    # float64 draws give odd and even offsets alike, distinct and in range.
    sampler = NeighborSampler(random_graph(), [5])
    deg = torch.full((4000,), 2**30 + 1)
    offs = sampler._floyd(deg, 5, seeded(0))                 # [5, 4000]
    assert offs.shape == (5, 4000)
    assert int(offs.min()) >= 0 and int(offs.max()) <= 2**30
    assert all(len(set(col)) == 5 for col in offs.t().tolist())
    odd = int((offs % 2).sum())
    assert stats.binomtest(odd, offs.numel()).pvalue > 1e-3


def test_generator_reproducibility():
    graph = random_graph(seed=5)
    sampler = NeighborSampler(graph, [4, 3])
    seeds = torch.arange(0, 60, 7)
    a, b = sampler.sample(seeds, seeded(3)), sampler.sample(seeds, seeded(3))
    c = sampler.sample(seeds, seeded(4))
    assert torch.equal(a.n_id, b.n_id)
    assert all(torch.equal(x.edge_index, y.edge_index) for x, y in zip(a.blocks, b.blocks))
    assert not all(torch.equal(x.edge_index, y.edge_index) for x, y in zip(a.blocks, c.blocks))


def test_empty_seeds_and_isolated_nodes():
    graph = CSRGraph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), num_nodes=5)
    sampler = NeighborSampler(graph, [2, 2])
    empty = sampler.sample(torch.empty(0, dtype=torch.long), seeded(0))
    assert empty.n_id.numel() == 0 and empty.batch_size == 0
    assert all(b.edge_index.shape == (2, 0) for b in empty.blocks)
    lonely = sampler.sample(torch.tensor([4, 3]), seeded(0))  # nodes 3, 4 have no edges
    assert lonely.n_id.tolist() == [4, 3] and lonely.num_sampled_edges == 0
    assert [(b.num_src, b.num_dst) for b in lonely.blocks] == [(2, 2), (2, 2)]


def test_minibatch_to_keeps_everything():
    graph = random_graph()
    batch = NeighborSampler(graph, [3, 2]).sample(torch.tensor([1, 2, 3]), seeded(0))
    moved = batch.to("cpu")
    assert torch.equal(moved.n_id, batch.n_id) and moved.batch_size == batch.batch_size
    assert [(b.num_src, b.num_dst) for b in moved.blocks] == \
        [(b.num_src, b.num_dst) for b in batch.blocks]
    assert moved.num_sampled_edges == batch.num_sampled_edges
    assert repr(NeighborSampler(graph, [3, 2])) == \
        "NeighborSampler(num_nodes=60, fanouts=[3, 2], device=cpu)"


@pytest.mark.parametrize("fanouts, match", [
    ([], r"at least one hop"), ([0], r"ints >= 1 or -1"), ([3, -2], r"ints >= 1 or -1"),
    ([2.5], r"ints >= 1 or -1"), ("15,10", r"sequence of ints"),
])
def test_bad_fanouts(fanouts, match):
    with pytest.raises((ValueError, TypeError), match=match):
        NeighborSampler(random_graph(), fanouts)


@pytest.mark.parametrize("seeds, error, match", [
    (torch.tensor([1.0, 2.0]), TypeError, r"integer node ids, got dtype torch.float32"),
    (torch.tensor([[1, 2]]), ValueError, r"1-D, got shape \[1, 2\]"),
    (torch.tensor([3, 60]), ValueError, r"\[0, num_nodes=60\), got ids in \[3, 60\]"),
    (torch.tensor([-1, 2]), ValueError, r"got ids in \[-1, 2\]"),
    ([1, 2], TypeError, r"seeds must be a torch.Tensor, got list"),
])
def test_bad_seeds(seeds, error, match):
    with pytest.raises(error, match=match):
        NeighborSampler(random_graph(), [2]).sample(seeds)


def test_duplicate_seeds_fail_and_leave_the_sampler_usable():
    graph = random_graph()
    sampler = NeighborSampler(graph, [3, 2])
    with pytest.raises(ValueError, match="distinct node ids, got duplicates"):
        sampler.sample(torch.tensor([4, 8, 4]))
    fresh = NeighborSampler(graph, [3, 2]).sample(torch.tensor([4, 8]), seeded(2))
    again = sampler.sample(torch.tensor([4, 8]), seeded(2))
    assert torch.equal(fresh.n_id, again.n_id)


def test_sample_trusted_draws_the_same_batch_as_sample():
    sampler = NeighborSampler(random_graph(), [4, 3])
    seeds = torch.tensor([5, 1, 40])
    checked, trusted = sampler.sample(seeds, seeded(3)), sampler.sample_trusted(seeds, seeded(3))
    assert torch.equal(checked.n_id, trusted.n_id) and checked.batch_size == trusted.batch_size
    assert all(torch.equal(a.edge_index, b.edge_index) and (a.num_src, a.num_dst) ==
               (b.num_src, b.num_dst) for a, b in zip(checked.blocks, trusted.blocks))


def test_bad_graph():
    with pytest.raises(TypeError, match="graph must be a CSRGraph, got Tensor"):
        NeighborSampler(torch.zeros(2, 3), [2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_the_cpu_invariants():
    graph = random_graph(seed=9)
    adj = neighbour_sets(graph)
    sampler = NeighborSampler(graph.to("cuda"), [4, 3])
    batch = sampler.sample(torch.tensor([3, 1, 4]), torch.Generator("cuda").manual_seed(0))
    assert batch.n_id.is_cuda and batch.n_id[:3].tolist() == [3, 1, 4]
    for block, fanout in zip(reversed(batch.blocks), [4, 3]):
        src, dst = global_edges(batch, block)
        for d in batch.n_id[:block.num_dst].tolist():
            got = [s for s, t in zip(src, dst) if t == d]
            assert len(set(got)) == len(got) == min(len(adj[d]), fanout)
            assert set(got) <= adj[d]
    with pytest.raises(ValueError, match="generator is on cpu"):
        sampler.sample(torch.tensor([0]), seeded(0))
