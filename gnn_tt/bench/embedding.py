"""``gnn-tt bench embedding``: one training step of a TT table against full tables.

Products scale (N = 2,449,029, D = 100, p = (125, 140, 140), q = (4, 5, 5)), B ids drawn

- ``uniform``: ``randint(0, N)`` (with replacement, as in any random mini-batch), or
- ``local``: without replacement from ``--blocks`` random blocks of consecutive rows, filled
  to ``--fill`` (256 blocks at 50%: the shape of a mini-batch of a partition-ordered graph,
  whose input nodes crowd into the partitions the seeds come from).

One step is forward, backward of a fixed random upstream gradient, and the optimizer step, for

- ``tt``: :class:`gnn_tt.TTEmbedding` (torch backend, gaussian init) + ``Adam`` on the cores,
  ranks 16 and 32,
- ``sparse``: ``nn.Embedding(sparse=True)`` + ``SparseAdam`` (the usual big-table baseline),
- ``dense``: ``nn.Embedding`` + ``Adam`` (dense gradient and a full-table update),

each in its own subprocess so that ``peak_rss_mb`` is that method's alone; ``step_mb`` is the
peak above the RSS before the model is built (interpreter, torch, ids and the B x D upstream
gradient excluded). Seconds are the
median of ``--steps`` steps after one warm-up step; ``ratio`` is seconds over the ``sparse``
step of the same ids. A papers100M-scale TT row (N = 111,059,956, D = 128,
p = (512, 500, 500), q = (8, 4, 4), rank 16) shows the TT table building and stepping in well
under 1 GB, beside the bytes a full fp32 table would need.

Example::

    gnn-tt bench embedding --output results/embedding.json
    gnn-tt bench embedding --quick
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

import psutil
import torch
from tqdm import tqdm

from gnn_tt.bench.output import report
from gnn_tt.common.memory import current_rss_bytes, peak_rss_bytes
from gnn_tt.embedding.tt_embedding import TTEmbedding

PRODUCTS = dict(num_embeddings=2_449_029, embedding_dim=100, tt_p_shapes=[125, 140, 140],
                tt_q_shapes=[4, 5, 5])
PAPERS = dict(num_embeddings=111_059_956, embedding_dim=128, tt_p_shapes=[512, 500, 500],
              tt_q_shapes=[8, 4, 4])
# --quick: a table small enough for a smoke run in seconds
QUICK = dict(num_embeddings=60_000, embedding_dim=24, tt_p_shapes=[30, 40, 50],
             tt_q_shapes=[2, 3, 4])
COLUMNS = ["table", "ids", "method", "rank", "seconds", "ratio", "param_mb", "peak_rss_mb",
           "step_mb"]


def make_ids(kind: str, num: int, batch: int, blocks: int, fill: float, seed: int) -> torch.Tensor:
    """``batch`` int64 ids in ``[0, num)``: ``uniform`` or ``local`` (see the module doc)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        return torch.randint(0, num, (batch,), generator=gen)
    block_len = math.ceil(batch / (blocks * fill))
    if blocks * block_len > num:
        raise ValueError(f"--blocks={blocks} blocks of {block_len} rows do not fit in {num} rows")
    # non-overlapping blocks: random distinct slots of a block_len grid
    starts = torch.randperm(num // block_len, generator=gen)[:blocks] * block_len
    pool = (starts[:, None] + torch.arange(block_len)).reshape(-1)
    return pool[torch.randperm(pool.numel(), generator=gen)[:batch]]


def _model(method: str, table: dict[str, Any], rank: int) -> tuple[torch.nn.Module,
                                                                  torch.optim.Optimizer]:
    if method == "tt":
        # The init does not change the step time.
        model = TTEmbedding(**table, tt_ranks=rank, backend="torch")
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)
    sparse = method == "sparse"
    model = torch.nn.Embedding(table["num_embeddings"], table["embedding_dim"], sparse=sparse)
    opt = torch.optim.SparseAdam if sparse else torch.optim.Adam
    return model, opt(model.parameters(), lr=1e-3)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Build one model, time ``case['steps']`` steps after a warm-up; runs in the worker."""
    table = case["table_shape"]
    ids = make_ids(case["ids"], table["num_embeddings"], case["batch"], case["blocks"],
                   case["fill"], case["seed"])
    grad_out = torch.randn(ids.numel(), table["embedding_dim"])
    base = current_rss_bytes()  # interpreter, torch, ids and upstream gradient
    torch.manual_seed(case["seed"])
    model, opt = _model(case["method"], table, case["rank"])
    times = []
    for _ in range(case["steps"] + 1):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(ids).backward(grad_out)
        opt.step()
        times.append(time.perf_counter() - start)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"seconds": statistics.median(times[1:]), "warmup_seconds": times[0],
            "param_mb": param_bytes / 2 ** 20, "peak_rss_mb": peak_rss_bytes() / 2 ** 20,
            "step_mb": (peak_rss_bytes() - base) / 2 ** 20}


def _in_subprocess(case: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "gnn_tt.bench.embedding", "--worker", json.dumps(case)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench embedding worker failed for {case}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gnn-tt bench embedding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="JSON path for the results")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--batch", type=int, default=300_000, help="ids per step")
    parser.add_argument("--ranks", default="16,32", help="TT ranks, comma separated")
    parser.add_argument("--blocks", type=int, default=256, help="blocks of the local ids")
    parser.add_argument("--fill", type=float, default=0.5,
                        help="fraction of the blocks' rows drawn by the local ids")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke size: table {QUICK['num_embeddings']} x "
                             f"{QUICK['embedding_dim']}, batch 5000, 1 step")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_case(json.loads(args.worker))))
        return 0
    for name in ("steps", "batch", "blocks"):
        if getattr(args, name) < 1:
            raise SystemExit(f"gnn-tt bench embedding: --{name} must be >= 1, "
                             f"got {getattr(args, name)}")
    if not 0 < args.fill <= 1:
        raise SystemExit(f"gnn-tt bench embedding: --fill must be in (0, 1], got {args.fill}")
    ranks = [int(r) for r in args.ranks.split(",")]
    table, big, batch, steps = PRODUCTS, PAPERS, args.batch, args.steps
    blocks = args.blocks
    if args.quick:
        table, big, batch, steps, blocks = QUICK, QUICK, 5_000, 1, 16
    base = dict(batch=batch, steps=steps, blocks=blocks, fill=args.fill, seed=args.seed)
    cases = [dict(base, table="products" if not args.quick else "quick", table_shape=table,
                  ids=ids, method=method, rank=rank)
             for ids in ("uniform", "local")
             for method, rank in [("sparse", 0), ("dense", 0), *(("tt", r) for r in ranks)]]
    cases.append(dict(base, table="papers100M" if not args.quick else "quick", table_shape=big,
                      ids="uniform", method="tt", rank=ranks[0]))
    rows = []
    for case in tqdm(cases, desc="bench embedding", disable=not sys.stderr.isatty()):
        result = _in_subprocess(case)
        rows.append({k: case[k] for k in ("table", "ids", "method")} |
                    {"rank": case["rank"] or "-"} | result)
    for row in rows:
        sparse = [r for r in rows if r["table"] == row["table"] and r["ids"] == row["ids"]
                  and r["method"] == "sparse"]
        row["ratio"] = row["seconds"] / sparse[0]["seconds"] if sparse else float("nan")
    full_bytes = big["num_embeddings"] * big["embedding_dim"] * 4
    rows.append({"table": "papers100M" if not args.quick else "quick", "ids": "-",
                 "method": "full table", "rank": "-", "seconds": float("nan"),
                 "ratio": float("nan"), "param_mb": full_bytes / 2 ** 20,
                 "peak_rss_mb": float("nan"), "step_mb": float("nan"),
                 "note": f"not allocated: fp32 table needs {full_bytes / 2 ** 30:.1f} GiB, "
                         f"machine RAM {psutil.virtual_memory().total / 2 ** 30:.1f} GiB"})
    report("embedding", rows, args.output, columns=COLUMNS,
           extra={"batch": batch, "steps": steps, "blocks": blocks, "fill": args.fill,
                  "seed": args.seed, "products": table, "papers": big,
                  "full_table_note": rows[-1]["note"]})
    print(rows[-1]["note"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
