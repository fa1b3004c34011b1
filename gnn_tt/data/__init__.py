"""Graph data layer: CSR graphs, datasets (OGB, user ``.npz`` files, synthetic)."""
from gnn_tt.data.dataset import GraphDataset
from gnn_tt.data.graph import CSRGraph
from gnn_tt.data.registry import DATASETS, dataset_names, load_dataset
from gnn_tt.data.synthetic import SyntheticConfig, synthetic_graph

__all__ = ["CSRGraph", "DATASETS", "GraphDataset", "SyntheticConfig", "dataset_names",
           "load_dataset", "synthetic_graph"]
