import dataclasses

import pytest

from gnn_tt.embedding.tt_shapes import PARTITION_ROWS
from gnn_tt.experiments.parts import layout_at, parts_of
from gnn_tt.training.config import TrainConfig
from partition import PARTITIONING_METHODS


def _config(**kw):
    base = {"dataset": "npz:cora.npz", "model": "gat", "emb": "tt", "tt_rank": 8,
            "partition": "original", "num_parts": None, "tt_p_shapes": [8, 8, 8], "runs": 2,
            "epochs": 3}
    return {**base, **kw}


def test_parts_of_each_partition():
    assert parts_of(_config()) == 0
    assert parts_of(_config(partition="metis-flat", num_parts=16)) == 16
    assert parts_of(_config(partition="hierarchical", tt_p_shapes=[5, 30, 30])) == 5
    assert parts_of(_config(partition="random")) is None


@pytest.mark.parametrize("method", PARTITIONING_METHODS)
@pytest.mark.parametrize("parts", [0, 1, 4, 250])
def test_layout_at_is_read_back_by_parts_of(method, parts):
    base = TrainConfig(partition="random")
    changes = layout_at(method, parts, base, 1000, PARTITION_ROWS)
    config = dataclasses.replace(base, **changes)
    assert parts_of(config.to_dict()) == parts
    assert config.partition == ("original" if parts == 0 else method)


def test_layout_at_hierarchical_row_factors():
    base = TrainConfig(emb_dim=64, tt_p_shapes=(10, 10, 10, 10), tt_q_shapes=(2, 2, 2, 8))
    # d follows the base config; the other factors hold ceil(1.05 * 1000 / 10) rows per part.
    assert layout_at("hierarchical", 10, base, 1000, PARTITION_ROWS) == {
        "partition": "hierarchical", "num_parts": None, "tt_p_shapes": (10, 5, 5, 5)}
    assert layout_at("hierarchical", 10, TrainConfig(), 1000, PARTITION_ROWS)[
        "tt_p_shapes"] == (10, 11, 10)
    with pytest.raises(ValueError, match="method must be one of metis-flat, hierarchical, "
                                         "got 'random'"):
        layout_at("random", 4, base, 1000, PARTITION_ROWS)


def test_parts_of_hierarchical_reads_the_used_row_factors():
    # Automatic tt_p_shapes are None in the config: the job's (its summary's) give p1.
    auto = _config(partition="hierarchical", tt_p_shapes=None)
    assert parts_of(auto, (6, 8, 8)) == 6
    assert parts_of(_config(partition="hierarchical", tt_p_shapes=[5, 30, 30]), [5, 30, 30]) == 5
    assert parts_of(auto) is None  # a job that failed before choosing them: off the axis
