import argparse
import json

import pytest

from gnn_tt.training.config import (LOCATION_FIELDS, RUNTIME_FIELDS, TrainConfig, add_config_args,
                           config_from_args, field_names, load_yaml, parse_config)


def test_defaults_and_derived_values():
    cfg = TrainConfig(num_layers=2, batch_size=100, lr=0.01)
    assert cfg.fanouts == (10, 10)
    assert cfg.eval_fanouts == (10, 10)
    assert cfg.eval_batch_size == 200
    assert cfg.emb_lr == 0.01
    assert cfg.output.startswith("runs/synthetic-gat-tt-")
    # Explicitly giving the derived values changes nothing, not even the output directory.
    same = TrainConfig(num_layers=2, batch_size=100, lr=0.01, fanouts=(10, 10),
                       eval_batch_size=200, emb_lr=0.01)
    assert same == cfg


def test_output_depends_on_training_fields_only():
    base = TrainConfig()
    assert TrainConfig(device="cpu", runs=3, num_threads=1).output == base.output
    assert TrainConfig(tt_rank=8).output != base.output
    assert TrainConfig(dataset="npz:/x/cora.npz").output.startswith("runs/cora-gat-tt-")


def test_dict_round_trip_through_json():
    cfg = TrainConfig(model="sage", fanouts=(5, 4, 3), emb_dim=64, tt_q_shapes=(4, 4, 4))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(again.fanouts, tuple)


def test_differing_fields():
    a = TrainConfig(tt_rank=16, hidden=64)
    b = TrainConfig(tt_rank=8, hidden=32, runs=4, device="cpu")
    assert a.differing_fields(b) == ["hidden", "tt_rank"]
    assert "runs" in RUNTIME_FIELDS and "device" in RUNTIME_FIELDS


def test_field_kinds_give_the_runtime_and_location_sets():
    # A finished run stands for other locations only; a checkpoint also resumes under another
    # device, more runs, other evaluation batches or another placement of a full table.
    assert LOCATION_FIELDS == {"root", "output", "resume", "overwrite", "cache_dir",
                               "num_threads"}
    assert RUNTIME_FIELDS == LOCATION_FIELDS | {"device", "runs", "eval_batch_size",
                                                "emb_placement"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(model="gcn"), r"unknown model 'gcn'; valid values: gat, sage"),
    (dict(emb="hash"), r"unknown emb 'hash'; valid values: tt, full, features"),
    (dict(partition="spectral"),
     r"unknown partition 'spectral'; valid values: auto, hierarchical, metis-flat, multilevel, "
     r"original, random, rcm"),
    (dict(fanouts=(5, 5)), r"fanouts \(5, 5\) has 2 entries but num_layers=3"),
    (dict(fanouts=(5, 0, 5)), r"each fanout must be >= 1 or -1"),
    (dict(eval_fanouts=(-1,)), r"eval_fanouts \(-1,\) has 1 entries but num_layers=3"),
    (dict(batch_size=0), r"batch_size must be >= 1, got 0"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
    (dict(lr=0.0), r"lr must be > 0, got 0.0"),
    (dict(device="tpu"), r"device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (dict(partition="metis-flat"), r"'metis-flat' needs num_parts"),
    (dict(emb_dim=64, tt_q_shapes=(4, 4, 5)), r"tt_q_shapes \(4, 4, 5\) multiply to 80"),
    (dict(tt_p_shapes=(10, 10), emb_dim=64, tt_q_shapes=(4, 4, 4)),
     r"need the same number of factors"),
])
def test_bad_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown config keys \['tt_rnak'\]; valid keys: "):
        TrainConfig.from_dict({"tt_rnak": 8})


def test_cli_is_generated_from_every_field(capsys):
    parser = add_config_args(argparse.ArgumentParser())
    help_text = parser.format_help()
    for name in field_names():
        assert "--" + name.replace("_", "-") in help_text
    assert "(default: 16)" in help_text  # tt_rank's default is shown
    args = parser.parse_args(["--model", "sage", "--fanouts", "15,10,5", "--no-residual",
                              "--emb-lr", "none", "--tt-p-shapes", "10,10,10"])
    cfg = config_from_args(args)
    assert (cfg.model, cfg.fanouts, cfg.residual, cfg.tt_p_shapes) == \
        ("sage", (15, 10, 5), False, (10, 10, 10))
    assert cfg.emb_lr == cfg.lr
    with pytest.raises(SystemExit):
        parser.parse_args(["--tt-rank", "big"])
    assert "--tt-rank: invalid value 'big'" in capsys.readouterr().err


def test_yaml_then_cli_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: sage\nhidden: 32\nfanouts: [4, 3]\nnum-layers: 2\nepochs: 7\n")
    cfg = parse_config(["--config", str(path), "--hidden", "48"])
    # YAML overrides the defaults; the flag overrides the YAML; untouched fields keep defaults.
    assert (cfg.model, cfg.hidden, cfg.fanouts, cfg.num_layers, cfg.epochs) == \
        ("sage", 48, (4, 3), 2, 7)
    assert cfg.tt_rank == TrainConfig().tt_rank
    # A flag equal to the default still overrides the YAML (it was passed).
    assert parse_config(["--config", str(path), "--epochs", "10"]).epochs == 10


def test_yaml_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml' does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tt_rank: 8\nheads_: 2\n")
    with pytest.raises(ValueError, match=r"unknown keys \['heads_'\]"):
        load_yaml(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping, got list"):
        load_yaml(bad)


def test_launch_configs_parse():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "launch" / "configs").glob("*.yaml"))
    assert {p.stem for p in configs} >= {"products_gat", "products_sage", "papers100m_sage",
                                         "arxiv_sage"}
    for path in configs:
        cfg = parse_config(["--config", str(path)])
        assert len(cfg.fanouts) == cfg.num_layers
    products = parse_config(["--config", str(configs[0].parent / "products_sage.yaml")])
    assert (products.tt_p_shapes, products.tt_q_shapes, products.emb_dim, products.lr) == \
        ((125, 140, 140), (4, 5, 5), 100, 0.003)
