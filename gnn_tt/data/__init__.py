"""Graph data layer: CSR graphs, datasets (OGB, user ``.npz`` files, synthetic)."""
from gnn_tt.data.dataset import GraphDataset
from gnn_tt.data.datasets import DATASETS, dataset_names, load_dataset
from gnn_tt.data.graph import CSRGraph
from gnn_tt.data.loader import NeighborLoader
from gnn_tt.data.sampler import Block, MiniBatch, NeighborSampler
from gnn_tt.data.synthetic import SyntheticConfig, synthetic_graph

__all__ = [
    "Block",
    "CSRGraph",
    "DATASETS",
    "GraphDataset",
    "SyntheticConfig",
    "dataset_names",
    "load_dataset",
    "MiniBatch",
    "NeighborLoader",
    "NeighborSampler",
    "synthetic_graph",
]
