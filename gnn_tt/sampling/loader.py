"""Mini-batches of sampled blocks over a set of seed nodes: per-epoch shuffling, a DDP split
that drops nothing, and background prefetch of the next batch."""
from __future__ import annotations

import queue
import threading
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from gnn_tt.data.graph import CSRGraph
from gnn_tt.sampling.sampler import MiniBatch, NeighborSampler

# Leading words of the seed sequences, so the permutation and sampling streams never collide.
_PERMUTATION_STREAM, _SAMPLING_STREAM = 0, 1


def _seeded_generator(words: Sequence[int], device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator seeded by a hash of ``words`` (distinct word lists, distinct seeds)."""
    state = np.random.SeedSequence(list(words)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


def rank_share(seeds: Tensor, rank: int, world_size: int) -> Tensor:
    r"""The seeds of ``rank``: ``seeds[rank::world_size]``. The shares of ranks
    ``0..world_size-1`` partition ``seeds`` exactly and differ in size by at most one.

    Args:
        seeds (torch.Tensor): 1-D tensor of node ids.
        rank (int): this process's rank in ``[0, world_size)``.
        world_size (int): number of processes, ``>= 1``.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
    return seeds[rank::world_size]


def num_batches(num_seeds: int, batch_size: int, world_size: int = 1,
                drop_last: bool = False) -> int:
    """Batches per epoch on every rank: enough for the largest share, or, with ``drop_last``,
    the full batches the smallest share holds (identical on all ranks, as DDP needs)."""
    if drop_last:
        return (num_seeds // world_size) // batch_size
    largest_share = -(-num_seeds // world_size)  # ceil
    return -(-largest_share // batch_size)


def batch_bounds(share_size: int, batch_size: int, count: int) -> list[int]:
    """``count + 1`` offsets splitting a share into ``count`` batches of ``batch_size``, the
    last smaller; a share one seed short of filling ``count`` batches moves one seed from
    the second-to-last batch into the last, so no batch is empty while seeds remain."""
    return [max(0, min(i * batch_size, share_size - (count - i))) for i in range(count)] + \
        [min(share_size, count * batch_size)]


class NeighborLoader:
    r"""Iterates over :class:`MiniBatch` es of sampled blocks around this rank's seeds.

    Each epoch permutes the seeds with a generator seeded by ``(seed, epoch)`` only, so every
    rank computes the same permutation; rank ``r`` then takes ``perm[r::world_size]``, so the
    ranks' shares partition the seeds exactly. Every rank yields the same number of batches
    (:meth:`__len__`); a rank with one seed fewer gets a smaller last batch. Sampling draws
    from a generator seeded by ``(seed, epoch, rank)``, so an epoch is reproducible.

    With ``prefetch > 0`` a background thread samples up to ``prefetch`` batches ahead
    (torch ops release the GIL); it stops when the iteration ends, breaks or raises, and an
    error in it is raised in the consumer.

    Args:
        graph (CSRGraph): the graph; sampling runs on its device.
        seeds (torch.Tensor): distinct node ids to iterate over (e.g. the train split).
        fanouts (Sequence[int]): neighbours per hop, ``fanouts[0]`` nearest the seeds,
            ``-1`` for all.
        batch_size (int): seeds per batch.
        shuffle (bool): permute the seeds every epoch (default: ``True``).
        rank (int): this process's rank (default: ``0``).
        world_size (int): number of processes (default: ``1``).
        seed (int): base of every random stream, ``>= 0`` (default: ``0``).
        drop_last (bool): skip the last, incomplete batch; then every rank yields only full
            batches (default: ``False``).
        prefetch (int): batches sampled ahead in a background thread; ``0`` samples in the
            consumer's thread (default: ``1``).
        pin_memory (bool): page-lock each batch for asynchronous copies to a GPU
            (default: ``False``).

    Example::

        loader = NeighborLoader(graph, train_idx, [15, 10, 5], batch_size=1000,
                                rank=rank, world_size=world_size, pin_memory=True)
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            for batch in loader:
                batch = batch.to(device, non_blocking=True)
    """

    def __init__(self, graph: CSRGraph, seeds: Tensor, fanouts: Sequence[int], batch_size: int,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1, seed: int = 0,
                 drop_last: bool = False, prefetch: int = 1, pin_memory: bool = False):
        name = self.__class__.__name__
        if not isinstance(seeds, Tensor) or seeds.dim() != 1:
            raise ValueError(f"'{name}': seeds must be a 1-D tensor of node ids, got "
                             f"{getattr(seeds, 'shape', type(seeds).__name__)}")
        if seeds.dtype.is_floating_point or seeds.dtype.is_complex or seeds.dtype == torch.bool:
            raise TypeError(f"'{name}': seeds must hold integer node ids, got {seeds.dtype}")
        for arg, value, low in (("batch_size", batch_size, 1), ("seed", seed, 0),
                                ("prefetch", prefetch, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"'{name}': {arg} must be an int >= {low}, got {value!r}")
        rank_share(seeds, rank, world_size)  # validates rank and world_size
        self.sampler = NeighborSampler(graph, fanouts)
        if pin_memory and self.sampler.device.type != "cpu":
            raise ValueError(f"'{name}': pin_memory applies to batches sampled on the CPU, "
                             f"the graph is on {self.sampler.device}")
        self.seeds = seeds.long().cpu()
        # Checked once here, so the batches skip the sampler's per-batch checks (and their
        # host syncs): every batch is a slice of a permutation of these seeds.
        if self.seeds.numel():
            lo, hi = int(self.seeds.min()), int(self.seeds.max())
            if lo < 0 or hi >= graph.num_nodes:
                raise ValueError(f"'{name}': seeds must lie in [0, num_nodes={graph.num_nodes})"
                                 f", got ids in [{lo}, {hi}]")
            if torch.unique(self.seeds).numel() != self.seeds.numel():
                raise ValueError(f"'{name}': seeds must be distinct node ids, got duplicates")
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.prefetch, self.pin_memory = prefetch, pin_memory
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and sampling stream the next iteration uses."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"'{self.__class__.__name__}': epoch must be an int >= 0, "
                             f"got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        return num_batches(self.seeds.numel(), self.batch_size, self.world_size, self.drop_last)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_seeds={self.seeds.numel()}, "
                f"fanouts={self.sampler.fanouts}, batch_size={self.batch_size}, "
                f"rank={self.rank}, world_size={self.world_size}, batches={len(self)})")

    def share(self) -> Tensor:
        """This rank's seeds for the current epoch, in iteration order (int64, CPU)."""
        if self.shuffle:
            gen = _seeded_generator([_PERMUTATION_STREAM, self.seed, self.epoch])
            order = torch.randperm(self.seeds.numel(), generator=gen)
            return self.seeds[rank_share(order, self.rank, self.world_size)]
        return rank_share(self.seeds, self.rank, self.world_size)

    def _batches(self) -> Iterator[MiniBatch]:
        share = self.share().to(self.sampler.device)
        gen = _seeded_generator([_SAMPLING_STREAM, self.seed, self.epoch, self.rank],
                                self.sampler.device)
        bounds = batch_bounds(share.numel(), self.batch_size, len(self))
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            batch = self.sampler.sample_trusted(share[lo:hi], gen)
            yield batch.pin_memory() if self.pin_memory else batch

    def __iter__(self) -> Iterator[MiniBatch]:
        if self.prefetch == 0:
            return self._batches()
        return self._prefetched()

    def _prefetched(self) -> Iterator[MiniBatch]:
        done = object()  # end-of-epoch marker
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item: object) -> bool:
            # Block while the queue is full, but give up once the consumer has stopped.
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in self._batches():
                    if not put(batch):
                        return
                put(done)
            except BaseException as error:  # handed to the consumer, raised there
                put(error)

        worker = threading.Thread(target=produce, name="NeighborLoader-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()
