r"""Synthetic stand-in for ogbn-products: a degree-corrected hierarchical community graph.

Nodes sit in a three-level hierarchy, *group* (a super-class) > *class* > *community*
(``community_size`` nodes on average); class sizes follow a Zipf law. Each node ``v`` has a
power-law propensity :math:`w_v` (Pareto, exponent ``degree_exponent``) and starts about
:math:`|E| \, w_v / \sum w` edges. Each edge picks a level of the hierarchy (the source's
community with probability ``p_community``, its class with ``p_class``, its group with
``p_group``, else the whole graph) and a destination inside that block with probability
:math:`\propto w`. Duplicates and self-loops are dropped and redrawn until the graph has
``round(nodes * degree / 2)`` edges. The label of a node is its class, except a fraction
``label_noise`` of nodes whose label is redrawn uniformly among the classes of the node's
group. Node ids are a seeded random permutation of the hierarchy order, so the dataset order
carries no locality (as a crawl order would not) and a graph partitioner has something to
find.

Structure therefore predicts labels, as on ogbn-products, and layouts that keep communities
together help. Measured at 200,000 nodes with the other defaults: label propagation from the
train split reaches 0.83 test accuracy (majority class: 0.22), edge homophily 0.59; the
noise caps accuracy near ``1 - label_noise * (1 - groups / classes)``. ogbn-products: label
propagation 0.74, homophily 0.81 (its sales-rank split makes it harder than its homophily
suggests; the random split here does not, so the label noise carries the difficulty).
Splits: a seeded random 8% / 2% / 90% train / valid / test (ogbn-products: 8% / 1.6% /
90.4%, by sales rank).

Cost: sources are walked in hierarchy order so the per-node tables are read sequentially;
destinations are integer gathers from a stub array (a node's propensity quantized to stubs,
no float CDF search); keys are int64 ``min * N + max``, sorted and deduplicated in place, so
one sort removes duplicates and redraws merge in linear time; the deduplicated keys stream
into the chunked CSR build (:meth:`CSRGraph.from_upper_keys`), whose rows then arrive sorted.
Memory: about 140 bytes per node of tables, and per directed edge 4 bytes of keys plus, while
redraws merge or the CSR is built, a second array of that size; docs/benchmarks.md has the
measured figures.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from gnn_tt.common.checks import check_positive_int
from gnn_tt.data.dataset import GraphDataset
from gnn_tt.data.graph import CSRGraph

# Edges drawn per chunk: bounds the float64/int64 temporaries to ~100 MB each.
_CHUNK = 1 << 22
# Stubs per unit of propensity: the propensity w >= 1 is quantized to round(w * _STUB_RES)
# entries of the stub array, so sampling "proportional to w" is a uniform integer draw.
_STUB_RES = 4
# Top-up rounds when duplicate and self-loop draws leave the edge count short of the target.
_MAX_ROUNDS = 4


@dataclass
class SyntheticConfig:
    r"""Parameters of :func:`synthetic_graph`. The defaults give ``synthetic-products``.

    Args:
        nodes (int): number of nodes (default: ``2_449_029``, as ogbn-products).
        degree (float): target mean degree, i.e. ``2 * undirected edges / nodes``
            (default: ``50.52``, as ogbn-products' 61,859,140 edges).
        classes (int): number of classes (default: ``47``).
        groups (int, optional): number of super-classes, the top level of the hierarchy
            (default: ``None``, i.e. ``round(sqrt(classes))``: 7 for 47 classes).
        community_size (int): mean number of nodes per community, the finest level
            (default: ``400``).
        p_community (float): probability that an edge stays in its source's community
            (default: ``0.7``).
        p_class (float): probability that it goes elsewhere in the source's class
            (default: ``0.15``).
        p_group (float): probability that it goes elsewhere in the source's group
            (default: ``0.08``); the rest connects uniformly (by propensity) over the graph.
        label_noise (float): fraction of nodes whose label is redrawn among their group's
            classes (default: ``0.2``).
        degree_exponent (float): power-law exponent of the expected degrees, > 2
            (default: ``2.5``).
        max_degree (int): cap on a node's expected degree (default: ``20_000``;
            ogbn-products' largest degree is 17,481).
        class_skew (float): Zipf exponent of the class sizes, 0 = equal sizes
            (default: ``1.0``).
        train_frac (float): fraction of nodes in the training split (default: ``0.08``).
        valid_frac (float): fraction in the validation split (default: ``0.02``); the rest
            is the test split.
        seed (int): seed of every random draw (default: ``0``).

    Example::

        >>> cfg = SyntheticConfig.from_string("nodes=2000,degree=20,classes=5")
        >>> ds = synthetic_graph(cfg)
    """

    nodes: int = 2_449_029
    degree: float = 50.52
    classes: int = 47
    groups: int | None = None
    community_size: int = 400
    p_community: float = 0.7
    p_class: float = 0.15
    p_group: float = 0.08
    label_noise: float = 0.2
    degree_exponent: float = 2.5
    max_degree: int = 20_000
    class_skew: float = 1.0
    train_frac: float = 0.08
    valid_frac: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        name = self.__class__.__name__
        check_positive_int("classes", self.classes, name)
        if self.nodes < 2 * self.classes:
            raise ValueError(f"'{name}': nodes must be >= 2 * classes = {2 * self.classes}, "
                             f"got nodes={self.nodes}")
        if not 1 <= self.num_groups <= self.classes:
            raise ValueError(f"'{name}': groups must lie in [1, classes={self.classes}], "
                             f"got {self.num_groups}")
        if self.community_size < 2:
            raise ValueError(f"'{name}': community_size must be >= 2, got "
                             f"{self.community_size}")
        if not 0 < self.degree <= (self.nodes - 1) / 2:
            raise ValueError(f"'{name}': degree must lie in (0, (nodes - 1) / 2 = "
                             f"{(self.nodes - 1) / 2}], got {self.degree}")
        for key in ("p_community", "p_class", "p_group", "label_noise", "train_frac",
                    "valid_frac"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"'{name}': {key} must lie in [0, 1], got "
                                 f"{getattr(self, key)}")
        if self.p_community + self.p_class + self.p_group > 1.0 + 1e-9:
            raise ValueError(f"'{name}': p_community + p_class + p_group must be <= 1, got "
                             f"{self.p_community + self.p_class + self.p_group:.6g}")
        if self.train_frac + self.valid_frac > 1.0:
            raise ValueError(f"'{name}': train_frac + valid_frac must be <= 1, got "
                             f"{self.train_frac + self.valid_frac}")
        if self.degree_exponent <= 2.0:
            raise ValueError(f"'{name}': degree_exponent must be > 2 (finite mean degree), "
                             f"got {self.degree_exponent}")
        check_positive_int("max_degree", self.max_degree, name)
        if self.class_skew < 0:
            raise ValueError(f"'{name}': class_skew must be >= 0, got {self.class_skew}")

    @property
    def num_groups(self) -> int:
        """``groups``, or its default ``round(sqrt(classes))`` when ``None``."""
        return max(1, round(self.classes ** 0.5)) if self.groups is None else self.groups

    @classmethod
    def from_string(cls, spec: str) -> "SyntheticConfig":
        """Parse ``"key=value,key=value"`` (the part after ``synthetic:``); values are
        converted to the field's type."""
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in types:
                raise ValueError(f"synthetic spec item {item!r} is not key=value with key in "
                                 f"{sorted(types)}")
            try:
                kwargs[key] = int(value) if types[key].startswith("int") else float(value)
            except ValueError:
                raise ValueError(f"synthetic spec item {item!r}: {value!r} is not a valid "
                                 f"{types[key]}") from None
        return cls(**kwargs)


def _class_sizes(cfg: SyntheticConfig, gen: torch.Generator) -> torch.Tensor:
    """Zipf class sizes summing to ``cfg.nodes``, each >= 2, in a seeded random class order."""
    weight = torch.arange(1, cfg.classes + 1, dtype=torch.float64) ** -cfg.class_skew
    weight = weight[torch.randperm(cfg.classes, generator=gen)]
    # Two nodes per class first (valid by __post_init__), the rest by largest remainder.
    spare = cfg.nodes - 2 * cfg.classes
    share = weight / weight.sum() * spare
    sizes = share.floor().long()
    short = spare - int(sizes.sum())
    sizes[torch.argsort(share - sizes, descending=True, stable=True)[:short]] += 1
    return sizes + 2


def _hierarchy(cfg: SyntheticConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor,
                                                                        torch.Tensor]:
    """Block id of every node (hierarchy order) at the community, class and group levels.

    Returns ``(community, klass, group)``, int64 ``[nodes]`` each, all non-decreasing: each
    block is a contiguous range of nodes, nested in the block of the level above.
    """
    sizes = _class_sizes(cfg, gen)  # [classes]
    klass = torch.repeat_interleave(torch.arange(cfg.classes), sizes)
    # Classes (in id order) split into `groups` contiguous runs of near-equal count.
    group = klass * cfg.num_groups // cfg.classes
    # Class c holds max(1, round(n_c / community_size)) communities of near-equal size.
    n_comm = (sizes.double() / cfg.community_size).round().long().clamp_(min=1)
    first_comm = torch.cumsum(n_comm, 0) - n_comm
    first_node = torch.cumsum(sizes, 0) - sizes
    pos = torch.arange(cfg.nodes) - first_node[klass]  # position inside the class
    community = first_comm[klass] + pos * n_comm[klass] // sizes[klass]
    return community, klass, group


def _propensity_stubs(cfg: SyntheticConfig, gen: torch.Generator) -> torch.Tensor:
    """Integer propensity (stub count) of every node: round(_STUB_RES * w), w Pareto >= 1
    capped so that no node expects more than ``max_degree`` neighbours."""
    alpha = cfg.degree_exponent - 1.0  # P(w > x) = x^-alpha
    u = torch.rand(cfg.nodes, generator=gen, dtype=torch.float64)
    w = (1.0 - u) ** (-1.0 / alpha)  # [nodes], >= 1
    # Expected degree of v is degree * w_v / mean(w); find the cap c with
    # degree * c / mean(min(w, c)) = max_degree by fixed-point iteration (mean moves slowly).
    cap = max(float(cfg.max_degree), 1.0)
    limit = min(float(cfg.max_degree), cfg.nodes - 1.0)
    for _ in range(8):
        cap = max(1.0, limit * float(w.clamp(max=cap).mean()) / cfg.degree)
    return (w.clamp_(max=cap) * _STUB_RES).round_().to(torch.int32)


def _draw_keys(cfg: SyntheticConfig, count: int, weight: torch.Tensor, stub: torch.Tensor,
               lo: torch.Tensor, span: torch.Tensor, perm: torch.Tensor,
               gen: torch.Generator, bar: tqdm) -> tuple[torch.Tensor, int]:
    """Draw about ``count`` edges; return their undirected keys ``min * N + max`` in public
    ids, self-loops dropped (int64, unsorted, may repeat; a view of a buffer of one slot per
    draw), and the number drawn.

    ``weight`` (int32 ``[nodes]``): stub count of each node; ``stub`` (int32 ``[S]``): node
    of each stub. ``lo``/``span`` (int64 ``[nodes * 4]``): the stub range
    ``[lo, lo + span)`` of node v's block at level l (0 community, 1 class, 2 group,
    3 whole graph) at ``v * 4 + l``.
    """
    n = cfg.nodes
    cut = torch.tensor([cfg.p_community, cfg.p_community + cfg.p_class,
                        cfg.p_community + cfg.p_class + cfg.p_group])
    # Sources in hierarchy order, node v starting count * w_v / W edges (stochastically
    # rounded): the per-source tables below are then read sequentially, not at random.
    share = weight.double() * (count / stub.numel())
    per_node = (share + torch.rand(n, generator=gen, dtype=torch.float64)).long()  # [n]
    ends = torch.cumsum(per_node, 0)
    drawn = int(ends[-1])
    # Node ranges holding about _CHUNK edges each.
    cuts = torch.searchsorted(ends, torch.tensor(range(_CHUNK, drawn, _CHUNK),
                                                dtype=torch.long), right=True)
    cuts = torch.unique_consecutive(torch.cat([torch.tensor([0]), cuts, torch.tensor([n])]))
    keys = torch.empty(drawn, dtype=torch.long)  # filled in place: no list to concatenate
    filled = 0
    for v0, v1 in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        src = torch.repeat_interleave(torch.arange(v0, v1), per_node[v0:v1])  # [b], sorted
        b = src.numel()
        level = torch.bucketize(torch.rand(b, generator=gen), cut, right=True)  # [b], 0..3
        slot = src * 4 + level
        width = span[slot]
        # float64 draws: a float32 uniform cannot address a range of > 2^24 stubs evenly.
        offset = (torch.rand(b, generator=gen, dtype=torch.float64) * width).long()
        dst = stub[lo[slot] + torch.minimum(offset, width - 1)]  # [b] int32, ∝ w in block
        a, c = perm[src], perm[dst.long()]  # hierarchy order -> public ids
        keep = a != c
        a, c = a[keep].long(), c[keep].long()
        keys[filled:filled + a.numel()] = torch.minimum(a, c) * n + torch.maximum(a, c)
        filled += a.numel()
        bar.update(b)
    return keys[:filled], drawn


def _compact(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x[keep]`` without a second copy of ``x``: the kept entries move to the front of
    ``x``, in order, one ``_CHUNK`` at a time; returns that prefix (a view)."""
    written = 0
    for s in range(0, x.numel(), _CHUNK):
        kept = x[s:s + _CHUNK][keep[s:s + _CHUNK]]  # copied before x[s:] is overwritten
        x[written:written + kept.numel()] = kept
        written += kept.numel()
    return x[:written]


def _sort_unique(keys: torch.Tensor) -> torch.Tensor:
    """``torch.unique(keys)`` in place: an in-place sort (no index array, no copy), then
    compaction; returns a prefix view of ``keys``."""
    keys.numpy().sort()
    keep = torch.ones(keys.numel(), dtype=torch.bool)
    torch.ne(keys[1:], keys[:-1], out=keep[1:])
    return _compact(keys, keep)


def _merge_new(keys: torch.Tensor, more: torch.Tensor) -> torch.Tensor:
    """Sorted union of two sorted unique int64 key arrays: binary searches one ``_CHUNK`` at
    a time, no re-sort; besides the output, one flag per key of ``more`` (which is compacted
    in place)."""
    if keys.numel() == 0:
        return more
    novel = torch.empty(more.numel(), dtype=torch.bool)
    for s in range(0, more.numel(), _CHUNK):
        block = more[s:s + _CHUNK]
        pos = torch.searchsorted(keys, block).clamp_(max=keys.numel() - 1)
        novel[s:s + _CHUNK] = keys[pos] != block
    more = _compact(more, novel)
    out = torch.empty(keys.numel() + more.numel(), dtype=keys.dtype)
    # A key lands after the keys before it in its own array and those below it in the other.
    for src, other in ((more, keys), (keys, more)):
        for s in range(0, src.numel(), _CHUNK):
            block = src[s:s + _CHUNK]
            slot = torch.searchsorted(other, block).add_(torch.arange(s, s + block.numel()))
            out.scatter_(0, slot, block)
    return out


def _drop_random(keys: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``keys`` without ``count`` entries chosen uniformly at random, order kept (in place:
    a prefix view of ``keys``).

    Distinct positions from i.i.d. draws form a uniform random subset whatever their number,
    so a random ``count`` of them is one too: no permutation of all of ``keys``.
    """
    if count <= 0:
        return keys
    drop = torch.empty(0, dtype=torch.long)
    while drop.numel() < count:
        draws = torch.randint(0, keys.numel(), (2 * (count - drop.numel()) + 16,),
                              generator=gen)
        drop = torch.unique(torch.cat([drop, draws]))
    drop = drop[torch.randperm(drop.numel(), generator=gen)[:count]]
    mask = torch.ones(keys.numel(), dtype=torch.bool)
    mask[drop] = False
    return _compact(keys, mask)


def synthetic_graph(config: SyntheticConfig | None = None, *, progress: bool = True,
                    **overrides: Any) -> GraphDataset:
    r"""Generate the synthetic hierarchical community graph (see the module docstring).

    Deterministic for a given configuration (seed included). The graph has exactly
    ``round(nodes * degree / 2)`` undirected edges unless the hierarchy cannot hold that many
    distinct ones (blocks too small for the degree), in which case it has fewer.

    Args:
        config (SyntheticConfig, optional): parameters (default: ``SyntheticConfig()``,
            i.e. products scale).
        progress (bool): show a tqdm bar of the edges drawn, on a terminal and on rank 0
            (env ``RANK``) only (default: ``True``).
        **overrides: fields of :class:`SyntheticConfig` to replace, e.g. ``nodes=2000``.

    Returns:
        GraphDataset: named ``synthetic:<non-default fields>`` (``synthetic-products`` for
        the defaults), featureless (``x = None``).
    """
    base = config if config is not None else SyntheticConfig()
    valid = {f.name for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"synthetic_graph() got unknown parameters {unknown}; valid: "
                        f"{sorted(valid)}")
    cfg = dataclasses.replace(base, **overrides)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = cfg.nodes

    community, klass, group = _hierarchy(cfg, gen)  # [n] each, hierarchy order
    weight = _propensity_stubs(cfg, gen)  # [n] int32
    stub = torch.repeat_interleave(torch.arange(n, dtype=torch.int32), weight)  # [S]
    stub_start = torch.cumsum(weight.long(), 0) - weight  # [n], first stub of each node

    # Stub range of each node's block at each level: blocks are contiguous node ranges, so
    # a block's stubs are the range from its first node's first stub to its last's end.
    lo = torch.empty(n, 4, dtype=torch.long)
    span = torch.empty(n, 4, dtype=torch.long)
    stub_end = stub_start + weight
    for level, block in enumerate((community, klass, group)):
        counts = torch.bincount(block)
        first = torch.cumsum(counts, 0) - counts  # first node of each block
        last = first + counts - 1
        lo[:, level] = stub_start[first][block]
        span[:, level] = stub_end[last][block] - lo[:, level]
    lo[:, 3], span[:, 3] = 0, stub.numel()
    lo, span = lo.view(-1), span.view(-1)
    del stub_end, stub_start, community

    perm = torch.randperm(n, generator=gen).to(torch.int32)  # hierarchy order -> public id
    target = round(n * cfg.degree / 2)
    bar = tqdm(total=target, desc="synthetic edges", unit="edge", unit_scale=True,
               disable=not (progress and sys.stderr.isatty())
               or int(os.environ.get("RANK", "0")) != 0)
    keys, drawn = _draw_keys(cfg, target, weight, stub, lo, span, perm, gen, bar)
    bar.set_postfix_str("dedup")
    keys = _sort_unique(keys)  # [E] sorted: the one big sort
    keep_rate = keys.numel() / max(drawn, 1)
    for _ in range(_MAX_ROUNDS):
        if keys.numel() >= target:
            break
        # Redraw the shortfall over the rate at which draws turned into new edges, with a
        # margin (the rate falls as the graph fills): a surplus is trimmed below.
        extra = min(int((target - keys.numel()) / max(keep_rate, 1e-3) * 1.25) + 256,
                    4 * target)
        bar.total = bar.n + extra
        bar.refresh()
        more, more_drawn = _draw_keys(cfg, extra, weight, stub, lo, span, perm, gen, bar)
        before = keys.numel()
        keys = _merge_new(keys, _sort_unique(more))
        keep_rate = (keys.numel() - before) / max(more_drawn, 1)
        del more
    keys = _drop_random(keys, keys.numel() - target, gen)
    del stub, lo, span, weight
    bar.set_postfix_str("CSR")
    graph = CSRGraph.from_upper_keys(keys, n)
    bar.close()
    del keys

    # Labels: the class, redrawn among the group's classes for a label_noise fraction.
    y_hier = klass.clone()
    noisy = torch.rand(n, generator=gen) < cfg.label_noise
    g = group[noisy]
    # Group g holds classes [ceil(g*C/G), ceil((g+1)*C/G)): the inverse of c * G // C.
    c_lo = (g * cfg.classes + cfg.num_groups - 1) // cfg.num_groups
    c_hi = ((g + 1) * cfg.classes + cfg.num_groups - 1) // cfg.num_groups
    y_hier[noisy] = c_lo + (torch.rand(g.numel(), generator=gen, dtype=torch.float64)
                            * (c_hi - c_lo)).long()
    y = torch.empty(n, dtype=torch.long)
    y[perm.long()] = y_hier

    split = torch.randperm(n, generator=gen)
    n_train, n_valid = round(n * cfg.train_frac), round(n * cfg.valid_frac)
    train_idx, rest = split[:n_train].sort().values, split[n_train:]
    valid_idx, test_idx = rest[:n_valid].sort().values, rest[n_valid:].sort().values

    defaults = SyntheticConfig()
    changed = [f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
               if getattr(cfg, f.name) != getattr(defaults, f.name)]
    name = "synthetic:" + ",".join(changed) if changed else "synthetic-products"
    return GraphDataset(name=name, graph=graph, y=y, train_idx=train_idx,
                        valid_idx=valid_idx, test_idx=test_idx, num_classes=cfg.classes)
