"""Neighbour sampling: vectorized fanout sampling into blocks, and the per-rank batch loader."""
from gnn_tt.sampling.loader import NeighborLoader
from gnn_tt.sampling.sampler import Block, MiniBatch, NeighborSampler

__all__ = ["Block", "MiniBatch", "NeighborLoader", "NeighborSampler"]
