import socket

import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp

from gnn_tt.common import distributed as dist
from gnn_tt.training.evaluate import evaluate_full, split_accuracy


def test_split_accuracy_single_process_matches_a_loop():
    gen = torch.Generator().manual_seed(0)
    y_true = torch.randint(0, 5, (101,), generator=gen)
    y_pred = torch.where(torch.rand(101, generator=gen) < 0.6, y_true,
                         torch.randint(0, 5, (101,), generator=gen))
    correct = sum(int(p) == int(t) for p, t in zip(y_pred, y_true))
    assert split_accuracy(y_pred, y_true) == correct / 101
    assert split_accuracy(y_pred[:0], y_true[:0]) == 0.0


def test_ogb_evaluator_agrees_with_the_counts():
    y_true = torch.tensor([0, 1, 2, 3, 3, 1, 0])
    y_pred = torch.tensor([0, 1, 1, 3, 2, 1, 0])
    assert split_accuracy(y_pred, y_true, ogb_name="ogbn-arxiv") == pytest.approx(5 / 7, abs=0)


def test_evaluate_full_scores_each_split():
    logits = torch.eye(4)[torch.tensor([0, 1, 2, 3, 0, 0])]  # predictions 0 1 2 3 0 0
    y = torch.tensor([0, 1, 0, 3, 0, 1])
    out = evaluate_full(lambda: logits, y, {"val": torch.tensor([0, 1, 2]),
                                            "test": torch.tensor([3, 4, 5])})
    assert out == {"val": 2 / 3, "test": 2 / 3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=2)
    # Unequal shares: rank 0 has 2 nodes (both right), rank 1 has 6 (one right). The mean of
    # per-rank ratios would be (1 + 1/6) / 2 = 0.583; the exact accuracy is 3 / 8.
    if rank == 0:
        y_pred, y_true = torch.tensor([1, 2]), torch.tensor([1, 2])
    else:
        y_pred, y_true = torch.tensor([0, 0, 0, 0, 0, 0]), torch.tensor([0, 1, 1, 1, 1, 1])
    acc = split_accuracy(y_pred, y_true)
    gathered = dist.all_gather_varlen(y_true)
    queue.put((rank, acc, gathered.tolist()))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_sum_counts_not_ratios():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():  # a hang: kill it, or it would hold up the interpreter's exit
            p.kill()
        assert p.exitcode == 0
    for rank, acc, gathered in results:
        assert acc == 3 / 8
        assert gathered == [1, 2, 0, 1, 1, 1, 1, 1]  # rank order, unequal lengths
