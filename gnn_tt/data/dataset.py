"""The node-classification dataset every loader returns: a graph, labels, splits, features."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gnn_tt.data.graph import CSRGraph

_EDGE_CHUNK = 1 << 23


@dataclass
class GraphDataset:
    r"""A node-classification dataset: one graph, one label per node and three splits.

    Args:
        name (str): the name it was loaded under (e.g. ``"ogbn-products"``).
        graph (CSRGraph): symmetrized, without self-loops.
        y (torch.Tensor): int64 class of every node, ``-1`` for unlabelled nodes.
        train_idx (torch.Tensor): int64 node ids of the training split.
        valid_idx (torch.Tensor): int64 node ids of the validation split.
        test_idx (torch.Tensor): int64 node ids of the test split.
        num_classes (int): number of classes; labels lie in ``[0, num_classes)``.
        x (torch.Tensor, optional): float node features (default: ``None``).
        ogb_name (str, optional): the ``ogb.nodeproppred.Evaluator`` name for OGB datasets,
            else ``None`` (default: ``None``).

    Shapes:
        - **y:** :math:`(N,)`
        - **train_idx / valid_idx / test_idx:** :math:`(N_{split},)`
        - **x:** :math:`(N, F)`
    """

    name: str
    graph: CSRGraph
    y: torch.Tensor
    train_idx: torch.Tensor
    valid_idx: torch.Tensor
    test_idx: torch.Tensor
    num_classes: int
    x: torch.Tensor | None = None
    ogb_name: str | None = None

    def __post_init__(self) -> None:
        n = self.graph.num_nodes
        if self.y.dtype != torch.long or self.y.shape != (n,):
            raise ValueError(f"'{self.__class__.__name__}' {self.name!r}: y must be int64 of "
                             f"shape [{n}], got {self.y.dtype} {list(self.y.shape)}")
        if self.num_classes < 1:
            raise ValueError(f"'{self.__class__.__name__}' {self.name!r}: num_classes must be "
                             f">= 1, got {self.num_classes}")
        if self.y.numel() and (int(self.y.min()) < -1 or int(self.y.max()) >= self.num_classes):
            raise ValueError(f"'{self.__class__.__name__}' {self.name!r}: y must lie in "
                             f"[-1, num_classes={self.num_classes}), got "
                             f"[{int(self.y.min())}, {int(self.y.max())}]")
        for split in ("train_idx", "valid_idx", "test_idx"):
            idx = getattr(self, split)
            if idx.dtype != torch.long or idx.dim() != 1:
                raise ValueError(f"'{self.__class__.__name__}' {self.name!r}: {split} must be a "
                                 f"1-D int64 tensor, got {idx.dtype} {list(idx.shape)}")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise ValueError(f"'{self.__class__.__name__}' {self.name!r}: {split} holds ids "
                                 f"outside [0, {n}): [{int(idx.min())}, {int(idx.max())}]")
        if self.x is not None and (self.x.dim() != 2 or self.x.size(0) != n
                                   or not self.x.dtype.is_floating_point):
            raise ValueError(f"'{self.__class__.__name__}' {self.name!r}: x must be a float "
                             f"[{n}, F] tensor, got {self.x.dtype} {list(self.x.shape)}")

    @property
    def num_nodes(self) -> int:
        return self.graph.num_nodes

    @property
    def num_features(self) -> int:
        """Width of ``x``; 0 for a featureless dataset."""
        return 0 if self.x is None else int(self.x.size(1))

    def edge_homophily(self) -> float:
        """Fraction of edges between labelled nodes whose two ends share a class."""
        rowptr, col = self.graph.rowptr, self.graph.col
        deg = self.graph.degree()
        same = total = 0
        # Node ranges of about _EDGE_CHUNK edges bound the temporaries at products scale.
        cuts = torch.searchsorted(rowptr, torch.tensor(range(0, self.graph.num_edges,
                                                             _EDGE_CHUNK), dtype=torch.long))
        cuts = torch.unique_consecutive(torch.cat([cuts, torch.tensor([self.num_nodes])]))
        for v0, v1 in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            y_src = torch.repeat_interleave(self.y[v0:v1], deg[v0:v1])
            y_dst = self.y[col[rowptr[v0]:rowptr[v1]].long()]
            both = (y_src >= 0) & (y_dst >= 0)
            same += int((both & (y_src == y_dst)).sum())
            total += int(both.sum())
        return same / total if total else 0.0

    def summary(self) -> dict[str, int | float | str | None]:
        """Sizes and label statistics as a flat dict (for logs and result JSON)."""
        deg = self.graph.degree()
        return {
            "name": self.name,
            "num_nodes": self.num_nodes,
            "num_edges": self.graph.num_edges // 2,  # undirected
            "mean_degree": round(self.graph.num_edges / max(self.num_nodes, 1), 2),
            "max_degree": int(deg.max()) if self.num_nodes else 0,
            "num_classes": self.num_classes,
            "num_features": self.num_features,
            "labelled": int((self.y >= 0).sum()),
            "train": int(self.train_idx.numel()),
            "valid": int(self.valid_idx.numel()),
            "test": int(self.test_idx.numel()),
            "edge_homophily": round(self.edge_homophily(), 4),
            "ogb_name": self.ogb_name,
        }

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.name}, num_nodes={self.num_nodes}, "
                f"num_edges={self.graph.num_edges // 2}, num_classes={self.num_classes}, "
                f"num_features={self.num_features}, train={self.train_idx.numel()}, "
                f"valid={self.valid_idx.numel()}, test={self.test_idx.numel()})")
