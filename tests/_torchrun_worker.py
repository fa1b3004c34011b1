"""Run by tests/test_distributed_train.py under torchrun: trains like ``gnn-tt train`` (with
the callbacks the environment asks for) and then saves this rank's final model state to
OUTPUT/rank{RANK}.pt, so the test can compare the replicas."""
import os
import sys

import torch

from gnn_tt.common import distributed as dist
from gnn_tt.training.callbacks import env_callbacks
from gnn_tt.training.config import parse_config
from gnn_tt.training.train import Trainer, resolve_device

if __name__ == "__main__":
    config = parse_config(sys.argv[1:])
    device = resolve_device(config.device)
    owned = dist.init_from_env(device)
    trainer = Trainer(config, device, env_callbacks())
    trainer.fit()
    torch.save(trainer.model.state_dict(), os.path.join(config.output, f"rank{dist.rank()}.pt"))
    dist.cleanup(owned)
