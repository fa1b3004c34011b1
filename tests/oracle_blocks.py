"""Brute-force mini-batch construction for the model tests: Python loops over a tiny CSR
graph, independent of the sampler, taking every neighbour (fanout -1)."""
from __future__ import annotations

import torch

from gnn_tt.data.graph import CSRGraph
from gnn_tt.sampling.sampler import Block


def full_blocks(graph: CSRGraph, seeds: list[int],
                num_layers: int) -> tuple[torch.Tensor, list[Block]]:
    """``(n_id, blocks)`` of ``num_layers`` hops with all neighbours: node ``v`` aggregates
    from ``col[rowptr[v]:rowptr[v+1]]``; destinations first in each block's sources."""
    adj = [graph.col[graph.rowptr[v]:graph.rowptr[v + 1]].tolist()
           for v in range(graph.num_nodes)]
    dst_nodes = list(seeds)
    blocks = []
    for _ in range(num_layers):  # from the seeds outwards: the last layer first
        src_nodes = list(dst_nodes)
        local = {v: i for i, v in enumerate(src_nodes)}
        edges = []
        for d, v in enumerate(dst_nodes):
            for u in adj[v]:
                if u not in local:
                    local[u] = len(src_nodes)
                    src_nodes.append(u)
                edges.append((local[u], d))
        edge_index = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
        blocks.insert(0, Block(edge_index, num_src=len(src_nodes), num_dst=len(dst_nodes)))
        dst_nodes = src_nodes
    return torch.tensor(dst_nodes, dtype=torch.long), blocks


def tiny_graph(directed: bool = False) -> CSRGraph:
    """10 nodes: a ring with chords, node 9 isolated as a source (no neighbours)."""
    edges = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 0, 2, 3, 8, 1],
                          [1, 2, 3, 4, 5, 6, 7, 0, 4, 6, 8, 5, 7]])
    return CSRGraph.from_edge_index(edges, num_nodes=10, symmetrize=not directed)
