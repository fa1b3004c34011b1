"""Run a test's worker in several spawned processes, with a deadline: a hang fails the test
(with the processes killed) instead of stalling the suite."""
from __future__ import annotations

import time
from typing import Callable

import torch.multiprocessing as mp


def spawn(fn: Callable[..., None], args: tuple, nprocs: int = 2, timeout: float = 180.0) -> None:
    """``fn(rank, *args)`` in ``nprocs`` processes; raises if one fails or any is still
    running after ``timeout`` seconds."""
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):  # re-raises a worker's exception
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            raise AssertionError(f"{fn.__name__}: processes still running after {timeout:.0f} s "
                                 "(a hang); killed")
