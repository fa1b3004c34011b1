"""The bytes a training step hands to collectives: the counter, the wire estimate, and the
formula, checked against the counters of a two-process gloo run of the real training step."""
import gc

import pytest
import torch
import torch.distributed as dist

from gnn_tt.common import comm
from gnn_tt.common.comm import CommCounter, counting, record, step_comm_bytes, wire_bytes
from gnn_tt.embedding import build_node_input
from gnn_tt.embedding.device_table import DeviceNodeEmbedding
from gnn_tt.embedding.node_input import FullNodeEmbedding
from gnn_tt.embedding.sharded_table import ShardedNodeEmbedding, rows_of_rank
from gnn_tt.models import GAT, GraphSAGE, NodeClassifier, wrap_ddp
from gnn_tt.sampling.sampler import MiniBatch
from gnn_tt.training.epoch import RunParts, train_epoch
from oracle_blocks import full_blocks, tiny_graph
from two_process import spawn

NUM_NODES, DIM, CLASSES = 10, 6, 3
LABELS = torch.arange(NUM_NODES) % CLASSES
# The seeds of each step on each of two ranks: batches of different sizes, so the replicated
# tables pad their all-gather to the larger rank's rows; node 9 has no neighbours.
STEP_SEEDS = [([0, 4, 7], [2, 4, 9, 5]), ([9, 1], [3, 8]), ([6, 2], [6])]
# (name, table of step_comm_bytes, GNN): the GAT's batch norm has buffers DDP broadcasts.
CASES = (("tt", "tt", "sage"), ("tt-gat", "tt", "gat"), ("host", "host", "sage"),
         ("device", "device", "sage"), ("sharded", "sharded", "sage"))


class _Batches:
    """A fixed list of batches as an epoch loader."""

    def __init__(self, batches: list[MiniBatch]) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def _n_id(seeds: list[int]) -> torch.Tensor:
    return full_blocks(tiny_graph(), seeds, 2)[0]


def _batches(rank: int) -> list[MiniBatch]:
    out = []
    for seeds in (step[rank] for step in STEP_SEEDS):
        n_id, blocks = full_blocks(tiny_graph(), seeds, 2)
        out.append(MiniBatch(n_id, blocks, batch_size=len(seeds)))
    return out


def _model(name: str, gnn: str, process_group=None) -> NodeClassifier:
    torch.manual_seed(0)
    if name.startswith("tt"):
        node_input = build_node_input("tt", num_nodes=NUM_NODES, embedding_dim=DIM,
                                      row_of_node=torch.arange(NUM_NODES), tt_ranks=2,
                                      tt_p_shapes=[2, 3, 2], tt_q_shapes=[3, 2, 1])
    elif name == "host":
        node_input = FullNodeEmbedding(NUM_NODES, DIM, seed=1)
    elif name == "device":
        node_input = DeviceNodeEmbedding(NUM_NODES, DIM, seed=1)
    else:
        node_input = ShardedNodeEmbedding(NUM_NODES, DIM, seed=1, process_group=process_group)
    if gnn == "gat":
        net = GAT(DIM, 4, CLASSES, num_layers=2, heads=2, dropout=0.0, norm="batch")
    else:
        net = GraphSAGE(DIM, 8, CLASSES, num_layers=2, dropout=0.0)
    return NodeClassifier(node_input, net)


def _parts(model: NodeClassifier, ddp_model: torch.nn.Module, rank: int) -> RunParts:
    optimizers = {"gnn": torch.optim.Adam(model.gnn_parameters(), lr=0.01),
                  "emb": model.node_input.embedding_optimizer(0.01)}
    return RunParts(model, ddp_model, optimizers, _Batches(_batches(rank)))


def _predicted(name: str, table: str, model: NodeClassifier, world_size: int = 2
               ) -> list[dict[str, int]]:
    """step_comm_bytes summed over the steps, for each rank, from the batches' ids."""
    ignored = set(model.ddp_ignored_names())
    dense = sum(p.numel() for n, p in model.named_parameters() if n not in ignored)
    buffers = sum(b.numel() * b.element_size() for n, b in model.named_buffers()
                  if n not in ignored)
    totals = [dict.fromkeys(comm.KINDS, 0) for _ in range(world_size)]
    for step in STEP_SEEDS:
        ids = [torch.unique(_n_id(step[r])) for r in range(world_size)]
        bounds = [rows_of_rank(NUM_NODES, world_size, r) for r in range(world_size)]
        served = [sum(int(((u >= lo) & (u < hi)).sum()) for u in ids) for lo, hi in bounds]
        for r in range(world_size):
            got = step_comm_bytes(table, world_size=world_size, dense_params=dense,
                                  embedding_dim=DIM, unique_ids=ids[r].numel(),
                                  max_unique_ids=max(u.numel() for u in ids),
                                  served_rows=served[r], buffer_bytes=buffers)
            for kind, nbytes in got.items():
                totals[r][kind] += nbytes
    return totals


# ---------------------------------------------------------------- the counter and the wire

def test_counter_counts_the_active_block_only():
    outer, inner = CommCounter(), CommCounter()
    record("ddp_all_reduce", 5)  # no counter active: dropped
    with counting(outer):
        record("ddp_all_reduce", 100)
        with counting(inner):
            record("table_all_gather", 7)
        record("table_all_to_all", 3)
    record("ddp_all_reduce", 5)
    assert outer.bytes == {"ddp_all_reduce": 100, "ddp_broadcast": 0, "table_all_gather": 0,
                           "table_all_to_all": 3}
    assert (inner.total, outer.total) == (7, 103)
    assert outer.as_tensor().tolist() == [100.0, 0.0, 0.0, 3.0]
    with pytest.raises(ValueError, match=r"'CommCounter': unknown kind 'all_reduce' \(valid: "
                                         r"ddp_all_reduce, ddp_broadcast, table_all_gather, "
                                         r"table_all_to_all\)"):
        outer.add("all_reduce", 1)


@pytest.mark.parametrize("world_size", [1, 2, 8])
def test_wire_bytes(world_size):
    w = world_size
    assert wire_bytes("ddp_all_reduce", 800, w) == pytest.approx(2 * (w - 1) / w * 800)
    assert wire_bytes("ddp_broadcast", 800, w) == pytest.approx((w - 1) / w * 800)
    assert wire_bytes("table_all_gather", 800, w) == pytest.approx((w - 1) * 800)
    assert wire_bytes("table_all_to_all", 800, w) == pytest.approx((w - 1) / w * 800)
    with pytest.raises(ValueError, match=r"unknown communication kind 'gather'"):
        wire_bytes("gather", 1, w)


def test_step_comm_bytes_by_hand():
    # 1000 dense parameters, D = 3, U = 5 distinct ids, the largest rank has 7, S = 4 served.
    kw = dict(world_size=4, dense_params=1000, embedding_dim=3, unique_ids=5)
    assert step_comm_bytes("tt", **kw) == {"ddp_all_reduce": 4000, "ddp_broadcast": 0,
                                           "table_all_gather": 0, "table_all_to_all": 0}
    for table in ("host", "device"):
        assert step_comm_bytes(table, **kw, max_unique_ids=7)["table_all_gather"] == \
            8 + 7 * (8 + 3 * 4)
        assert step_comm_bytes(table, **kw)["table_all_gather"] == 8 + 5 * (8 + 3 * 4)
    assert step_comm_bytes("sharded", **kw, served_rows=4, buffer_bytes=24) == {
        "ddp_all_reduce": 4000, "ddp_broadcast": 24, "table_all_gather": 0,
        "table_all_to_all": 8 * 4 + 8 * 5 + (4 + 5) * 3 * 4}
    # The default S is U (ids spread evenly over the shards).
    assert step_comm_bytes("sharded", **kw)["table_all_to_all"] == 8 * 4 + 8 * 5 + 10 * 3 * 4
    assert sum(step_comm_bytes("sharded", **{**kw, "world_size": 1}).values()) == 0
    with pytest.raises(ValueError, match=r"'step_comm_bytes': unknown table 'full' \(valid: "
                                         r"tt, host, device, sharded\)"):
        step_comm_bytes("full", **kw)


def test_step_comm_bytes_agrees_with_sharded_comm_bytes():
    # The sharded table's own formula, from the ids, for the test's batches.
    from gnn_tt.embedding.sharded_table import sharded_comm_bytes

    model = _model("sharded", "sage")
    predicted = _predicted("sharded", "sharded", model)
    for r in (0, 1):
        expected = sum(sharded_comm_bytes([_n_id(step[q]) for q in (0, 1)], NUM_NODES, DIM)[r]
                       for step in STEP_SEEDS)
        assert predicted[r]["table_all_to_all"] == expected


def test_one_process_sends_nothing():
    model = _model("host", "sage")
    stats = train_epoch(_parts(model, model, 0), LABELS, 0, torch.device("cpu"))
    assert stats.steps == len(STEP_SEEDS)
    assert stats.comm.total == 0
    assert stats.comm_bytes_per_step == dict.fromkeys(comm.KINDS, 0.0)


# ---------------------------------------------------------------- two processes (gloo)

def _comm_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    # The sharded table's all-to-alls in a group of their own, apart from DDP's all-reduces.
    table_group = dist.new_group([0, 1])
    result = {}
    for name, _, gnn in CASES:
        model = _model(name, gnn, table_group if name == "sharded" else None)
        ddp = wrap_ddp(model)
        stats = train_epoch(_parts(model, ddp, rank), LABELS, 0, torch.device("cpu"))
        result[name] = {"bytes": dict(stats.comm.bytes), "per_step": stats.comm_bytes_per_step,
                        "steps": stats.steps}
        ddp = None  # freed while the group still holds its gloo process group (see cleanup)
    torch.save(result, f"{out_dir}/{rank}.pt")
    gc.collect()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    out = tmp_path_factory.mktemp("comm")
    spawn(_comm_worker, (str(out / "init"), str(out)))
    return [torch.load(out / f"{r}.pt") for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("name, table, gnn", CASES)
def test_counters_equal_the_formula(counted, name, table, gnn):
    predicted = _predicted(name, table, _model(name, gnn))
    for rank in (0, 1):
        assert counted[rank][name]["bytes"] == predicted[rank], (name, rank)
    # What the epoch reports: the mean over both ranks and the steps, the same on each rank.
    steps = len(STEP_SEEDS)
    mean = {k: (predicted[0][k] + predicted[1][k]) / (2 * steps) for k in comm.KINDS}
    for rank in (0, 1):
        assert counted[rank][name]["steps"] == steps
        assert counted[rank][name]["per_step"] == pytest.approx(mean, rel=0, abs=1e-9)
    # Each placement's traffic, and only that: DDP's all-reduce always, the buffers with the
    # GAT's batch norm, the table's own sync for the full tables.
    nonzero = {k for k, v in predicted[0].items() if v}
    assert nonzero == {"ddp_all_reduce"} | ({"ddp_broadcast"} if gnn == "gat" else set()) | \
        {comm.TABLE_SYNC[table]} - {None}


def test_formula_table_at_the_products_and_papers100m_shapes():
    from gnn_tt.bench.train import formula_rows

    rows = {(r["shape"], r["world"], r["table"]): r
            for r in formula_rows({"products": 574_861, "papers100M": 1_885_000}, [2, 8])}
    # SAGE 3 x 256 (206,895 parameters for D = 100 and 47 classes) and the TT cores (198,400
    # at rank 16, p = (125, 140, 140), q = (4, 5, 5)), all-reduced as float32.
    tt = rows["products", 2, "tt"]
    assert (tt["gnn_params"], tt["tt_params"]) == (206_895, 198_400)
    assert tt["bytes_by_kind"]["ddp_all_reduce"] == 4 * (206_895 + 198_400)
    assert rows["papers100M", 8, "tt"]["tt_params"] == 609_536
    full = rows["products", 8, "host / device"]
    assert full["bytes_by_kind"]["table_all_gather"] == 8 + 574_861 * (8 + 400)
    # A ring all-gather sends W - 1 times its input: the replicated table's cost grows with W.
    assert full["wire_MB_per_step"] == pytest.approx(
        (2 * 7 / 8 * 4 * 206_895 + 7 * (8 + 574_861 * 408)) / 1e6)
    assert full["ms_pcie4"] == pytest.approx(full["wire_MB_per_step"] * 1e6 / 25e9 * 1e3)
