"""Run by tests/test_distributed_train.py under torchrun: trains like ``gnn-tt train`` (with
the callbacks the environment asks for) and then saves this rank's final model state to
OUTPUT/rank{RANK}.pt, so the test can compare the replicas. A table sharded over the ranks is
saved gathered, as ``full_table`` (collective), beside the accuracy on a one-node split, where
rank 1's evaluation batch holds no ids (``one_node_acc``)."""
import os
import sys

import torch

from gnn_tt.common import distributed as dist
from gnn_tt.training.callbacks import env_callbacks
from gnn_tt.training.checkpoint import sharded_table
from gnn_tt.training.config import parse_config
from gnn_tt.training.evaluate import evaluate_sampled
from gnn_tt.training.train import Trainer, resolve_device

if __name__ == "__main__":
    config = parse_config(sys.argv[1:])
    device = resolve_device(config.device)
    owned = dist.init_from_env(device)
    trainer = Trainer(config, device, env_callbacks())
    trainer.fit()
    state = trainer.model.state_dict()
    table = sharded_table(trainer.model)
    if table is not None:
        data = trainer.data
        state["full_table"] = table.full_weight()
        state["one_node_acc"] = torch.tensor(evaluate_sampled(
            trainer.model, data.graph, data.y, {"one": data.splits["val"][:1]},
            config.eval_fanouts, 8, device)["one"])
    torch.save(state, os.path.join(config.output, f"rank{dist.rank()}.pt"))
    dist.cleanup(owned)
