import threading

import pytest
import torch

from gnn_tt.data import CSRGraph
from gnn_tt.sampling import NeighborLoader, NeighborSampler
from gnn_tt.sampling.loader import batch_bounds, num_batches, rank_share


def random_graph(num_nodes: int = 80, num_edges: int = 500) -> CSRGraph:
    gen = torch.Generator().manual_seed(0)
    return CSRGraph.from_edge_index(torch.randint(0, num_nodes, (2, num_edges), generator=gen),
                                    num_nodes)


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "NeighborLoader-prefetch"]


def seeds_of(loader: NeighborLoader) -> list[list[int]]:
    return [batch.n_id[:batch.batch_size].tolist() for batch in loader]


@pytest.mark.parametrize("num_seeds, world_size, batch_size",
                         [(37, 1, 8), (37, 3, 4), (40, 4, 5), (41, 2, 20), (5, 4, 2), (3, 4, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_shares_partition_the_seeds_with_equal_lengths(num_seeds, world_size, batch_size,
                                                            drop_last):
    graph = random_graph()
    seeds = torch.randperm(80, generator=torch.Generator().manual_seed(1))[:num_seeds]
    loaders = [NeighborLoader(graph, seeds, [2], batch_size, rank=r, world_size=world_size,
                              seed=3, drop_last=drop_last) for r in range(world_size)]
    for loader in loaders:
        loader.set_epoch(2)
    lengths = {len(loader) for loader in loaders}
    assert len(lengths) == 1  # DDP needs the same number of steps on every rank
    taken = []
    for loader in loaders:
        batches = seeds_of(loader)
        assert len(batches) == len(loader)
        assert all(len(b) <= batch_size for b in batches)
        if drop_last:
            assert all(len(b) == batch_size for b in batches)
        taken += [s for b in batches for s in b]
    assert len(taken) == len(set(taken))
    if drop_last:
        assert len(taken) == len(loaders[0]) * batch_size * world_size
    else:
        assert sorted(taken) == sorted(seeds.tolist())  # nothing dropped, nothing repeated


def test_a_rank_one_seed_short_still_yields_every_batch():
    # 2001 seeds on 2 ranks: 1001 and 1000 seeds, 2 batches of up to 1000 on both ranks.
    assert num_batches(2001, 1000, 2) == 2
    assert batch_bounds(1001, 1000, 2) == [0, 1000, 1001]
    assert batch_bounds(1000, 1000, 2) == [0, 999, 1000]
    assert num_batches(2001, 1000, 2, drop_last=True) == 1


def test_bounds_brute_force():
    for seeds_total in range(0, 25):
        for world_size in range(1, 5):
            for batch_size in range(1, 6):
                for drop_last in (False, True):
                    count = num_batches(seeds_total, batch_size, world_size, drop_last)
                    sizes = [rank_share(torch.arange(seeds_total), r, world_size).numel()
                             for r in range(world_size)]
                    for size in sizes:
                        bounds = batch_bounds(size, batch_size, count)
                        assert len(bounds) == count + 1 and bounds[0] == 0
                        steps = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
                        assert all(0 <= s <= batch_size for s in steps)
                        if drop_last:
                            assert all(s == batch_size for s in steps)
                        else:
                            assert bounds[-1] == size
                            # Empty batches only when a share has fewer seeds than batches.
                            assert min(steps, default=1) > 0 or size < count


def test_epochs_reshuffle_the_same_way_on_every_rank():
    graph = random_graph()
    seeds = torch.arange(0, 80, 2)
    a = NeighborLoader(graph, seeds, [2], 7, rank=0, world_size=2, seed=5)
    b = NeighborLoader(graph, seeds, [2], 7, rank=1, world_size=2, seed=5)
    order = {}
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        share_a, share_b = a.share(), b.share()
        # Interleaving the ranks' shares rebuilds one permutation of all seeds.
        merged = torch.stack([share_a, share_b], 1).flatten()
        assert sorted(merged.tolist()) == seeds.tolist()
        order[epoch] = merged.tolist()
    assert order[0] != order[1]
    again = NeighborLoader(graph, seeds, [2], 7, rank=1, world_size=2, seed=5)
    again.set_epoch(1)
    assert torch.equal(again.share(), b.share())
    unshuffled = NeighborLoader(graph, seeds, [2], 7, shuffle=False, rank=1, world_size=2)
    assert unshuffled.share().tolist() == seeds[1::2].tolist()


def test_sampling_is_reproducible_and_prefetch_changes_nothing():
    graph = random_graph()
    seeds = torch.arange(50)

    def epoch(prefetch: int, seed: int = 0) -> list[torch.Tensor]:
        loader = NeighborLoader(graph, seeds, [3, 2], 8, seed=seed, prefetch=prefetch)
        loader.set_epoch(4)
        return [t for b in loader for t in (b.n_id, *(blk.edge_index for blk in b.blocks))]

    sync, ahead, deep = epoch(0), epoch(1), epoch(3)
    assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(sync, ahead, deep))
    assert len(sync) == len(ahead) == 7 * 3
    assert not all(torch.equal(x, y) for x, y in zip(sync, epoch(0, seed=1)))


def test_prefetch_thread_stops_on_early_break():
    loader = NeighborLoader(random_graph(), torch.arange(80), [3, 2], 4, prefetch=2)
    it = iter(loader)
    next(it)
    assert prefetch_threads()
    it.close()  # what a `break` out of a for loop does when the iterator is dropped
    assert not prefetch_threads()
    for _ in loader:
        break
    assert not prefetch_threads()
    assert len(seeds_of(loader)) == 20  # a fresh iteration after a break is complete


@pytest.mark.parametrize("prefetch", [0, 1])
def test_sampling_errors_reach_the_consumer(prefetch):
    loader = NeighborLoader(random_graph(), torch.arange(80), [3], 10, prefetch=prefetch)
    real_sample = loader.sampler.sample_trusted
    calls = []

    def failing(seeds, generator=None):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("sampler broke on batch 3")
        return real_sample(seeds, generator)

    loader.sampler.sample_trusted = failing
    got = []
    with pytest.raises(RuntimeError, match="sampler broke on batch 3"):
        for batch in loader:
            got.append(batch)
    assert len(got) == 2
    assert not prefetch_threads()


def test_batches_skip_the_samplers_seed_checks(monkeypatch):
    # The loader checks its seeds once, at construction; the per-batch range and
    # distinctness checks of NeighborSampler.sample (a host sync each) must not run again.
    loader = NeighborLoader(random_graph(), torch.arange(30), [3], 7, prefetch=0)
    checked, distinct = [], []
    real_sample = NeighborSampler._sample

    def spy(self, seeds, generator, check_distinct):
        distinct.append(check_distinct)
        return real_sample(self, seeds, generator, check_distinct)

    monkeypatch.setattr(NeighborSampler, "_check_seeds", lambda self, s: checked.append(s))
    monkeypatch.setattr(NeighborSampler, "_sample", spy)
    assert sorted(s for batch in seeds_of(loader) for s in batch) == list(range(30))
    assert checked == [] and distinct == [False] * len(loader)


def test_len_and_repr():
    loader = NeighborLoader(random_graph(), torch.arange(23), [3, 2], 5, rank=1, world_size=2)
    assert len(loader) == 3  # shares of 12 and 11 seeds
    assert repr(loader) == ("NeighborLoader(num_seeds=23, fanouts=[3, 2], batch_size=5, "
                            "rank=1, world_size=2, batches=3)")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(batch_size=0), ValueError, r"batch_size must be an int >= 1, got 0"),
    (dict(rank=2, world_size=2), ValueError, r"rank must be an int in \[0, world_size=2\), got 2"),
    (dict(world_size=0), ValueError, r"world_size must be an int >= 1, got 0"),
    (dict(seed=-1), ValueError, r"seed must be an int >= 0, got -1"),
    (dict(prefetch=-1), ValueError, r"prefetch must be an int >= 0, got -1"),
    (dict(seeds=torch.ones(4)), TypeError, r"integer node ids, got torch.float32"),
    (dict(seeds=torch.ones(2, 2, dtype=torch.long)), ValueError, r"1-D tensor of node ids"),
    (dict(fanouts=[]), ValueError, r"at least one hop"),
    (dict(seeds=torch.tensor([3, 80])), ValueError,
     r"\[0, num_nodes=80\), got ids in \[3, 80\]"),
    (dict(seeds=torch.tensor([3, 5, 3])), ValueError, r"distinct node ids, got duplicates"),
])
def test_bad_arguments(kwargs, error, match):
    args = dict(graph=random_graph(), seeds=torch.arange(10), fanouts=[2], batch_size=4)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        NeighborLoader(**args)


def test_pin_memory_needs_a_cpu_graph():
    graph = random_graph().to("meta")  # any non-CPU device
    with pytest.raises(ValueError, match="pin_memory applies to batches sampled on the CPU, "
                                         "the graph is on meta"):
        NeighborLoader(graph, torch.arange(10), [2], 4, pin_memory=True)


def test_bad_epoch():
    loader = NeighborLoader(random_graph(), torch.arange(10), [2], 4)
    with pytest.raises(ValueError, match=r"epoch must be an int >= 0, got -1"):
        loader.set_epoch(-1)
