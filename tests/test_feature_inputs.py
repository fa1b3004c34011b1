"""Training with the dataset's node features beside a learnable table (``tt+features``,
``full+features``): the features help where they carry the labels, the summary counts each
part, and a featureless dataset is refused before anything is written."""
from pathlib import Path

import numpy as np
import pytest

from gnn_tt.training.config import TrainConfig
from gnn_tt.training.train import main, run

FEATURELESS = "synthetic:nodes=400,degree=6,classes=4,seed=0"


def informative_graph(path: Path, num_nodes: int = 1500, num_classes: int = 4,
                      degree: int = 8, homophily: float = 0.3, noise: float = 0.7,
                      seed: int = 0) -> str:
    """An ``npz:`` dataset whose structure says little about the labels (a random graph, a
    share ``homophily`` of the edges inside a class) and whose features say much:
    ``x = [one_hot(y) + noise, noise]``, 8 wide. Splits: the loader's stratified 60/20/20."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, num_nodes)
    src = rng.integers(0, num_nodes, num_nodes * degree // 2)
    dst = rng.integers(0, num_nodes, src.size)
    inside = rng.random(src.size) < homophily
    by_class = [np.flatnonzero(y == c) for c in range(num_classes)]
    dst[inside] = [rng.choice(by_class[y[s]]) for s in src[inside]]
    x = rng.normal(0.0, noise, (num_nodes, 2 * num_classes)).astype(np.float32)
    x[np.arange(num_nodes), y] += 1.0
    np.savez(path, edge_index=np.stack([src, dst]), y=y, x=x)
    return f"npz:{path}"


def config(tmp_path: Path, name: str, dataset: str, **overrides) -> TrainConfig:
    values = dict(dataset=dataset, model="sage", emb="tt", emb_dim=16, tt_rank=4,
                  num_layers=2, hidden=32, fanouts=(5, 5), batch_size=64, eval_batch_size=512,
                  epochs=4, lr=0.01, emb_lr=0.05, dropout=0.2, device="cpu", num_threads=1,
                  cache_dir=str(tmp_path / "cache"), output=str(tmp_path / name))
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.slow
def test_informative_features_beat_tt_alone(tmp_path):
    dataset = informative_graph(tmp_path / "informative.npz")
    tt = run(config(tmp_path, "tt", dataset))
    both = run(config(tmp_path, "tt+features", dataset, emb="tt+features"))
    # 4 balanced classes: chance is 0.25; the features alone allow ~0.75.
    assert both.test_acc.mean > tt.test_acc.mean + 0.2, (tt.test_acc, both.test_acc)
    # The TT part is laid out as for `tt`, and counted as the learnable embedding.
    assert both.tt_p_shapes == tt.tt_p_shapes and both.row_assignment_hash is not None
    assert both.row_assignment_hash == tt.row_assignment_hash
    assert set(both.parameters) == {"tt_cores", "gnn"}
    assert both.embedding_parameters == both.parameters["tt_cores"] == tt.embedding_parameters
    assert both.compression_ratio == tt.compression_ratio
    assert both.gnn_parameters == both.parameters["gnn"] > tt.gnn_parameters  # 16 + 8 inputs


@pytest.mark.slow
def test_full_table_with_projected_features_counts_each_part(tmp_path):
    dataset = informative_graph(tmp_path / "informative.npz", num_nodes=300)
    summary = run(config(tmp_path, "full+proj", dataset, emb="full+features", feature_proj=5,
                         epochs=1, batch_size=32))
    n = summary.dataset_summary["num_nodes"]
    assert summary.parameters["full_table"] == n * 16 == summary.embedding_parameters
    assert summary.parameters["feature_projection"] == 8 * 5 + 5
    assert summary.compression_ratio == 1.0  # the table alone vs a full table
    assert summary.tt_p_shapes is None and summary.row_assignment_hash is None
    assert summary.gnn_parameters == summary.parameters["gnn"]


@pytest.mark.parametrize("emb", ["features", "tt+features", "full+features"])
def test_featureless_dataset_is_refused_before_any_output(tmp_path, capsys, emb):
    out = tmp_path / "out"
    message = (rf"dataset '{FEATURELESS}' has no node features; --emb {emb.replace('+', '[+]')} "
               rf"needs them \(ogbn-\* and npz files with 'x' have them\)")
    with pytest.raises(ValueError, match=message):
        run(config(tmp_path, "out", FEATURELESS, emb=emb))
    assert not out.exists()
    assert main(["--dataset", FEATURELESS, "--emb", emb, "--device", "cpu",
                 "--output", str(out), "--cache-dir", str(tmp_path / "cache")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1  # one line: the message names the dataset and the kind
    assert errors[0].startswith(f"gnn-tt train: error: dataset '{FEATURELESS}' has no node")
    assert not out.exists()


def test_feature_proj_config_errors(tmp_path):
    assert config(tmp_path, "a", FEATURELESS).feature_proj is None  # raw features by default
    with pytest.raises(ValueError, match=r"feature_proj=8 projects the node features beside a "
                                         r"learnable table: it needs emb in tt\+features, "
                                         r"full\+features, got emb='features'"):
        config(tmp_path, "b", FEATURELESS, emb="features", feature_proj=8)
    with pytest.raises(ValueError, match=r"feature_proj must be >= 1, got 0"):
        config(tmp_path, "c", FEATURELESS, emb="tt+features", feature_proj=0)
    parsed = TrainConfig.from_dict({"emb": "full+features", "feature_proj": 16})
    assert (parsed.emb, parsed.feature_proj) == ("full+features", 16)
