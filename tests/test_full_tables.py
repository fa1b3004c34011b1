"""The placements of the full learnable table: host (FullNodeEmbedding, the reference), device
(DeviceNodeEmbedding) and sharded over ranks (ShardedNodeEmbedding)."""
import pytest
import torch
import torch.distributed as dist

from gnn_tt.embedding import FullNodeEmbedding, NodeInput, full_table
from gnn_tt.embedding.device_table import DeviceNodeEmbedding
from gnn_tt.embedding.sharded_table import (ShardedNodeEmbedding, rows_of_rank,
                                            sharded_comm_bytes)
from two_process import spawn

NUM_NODES, DIM, SEED, LR = 11, 4, 3, 0.1
# Per step, the ids each of two ranks looks up. Rank 0 owns rows [0, 6), rank 1 [6, 11).
BATCHES = [
    ([0, 3, 3, 7, 10], [3, 8, 8, 1, 3]),   # duplicates within and across ranks
    ([], [9, 6, 2, 9]),                    # rank 0 looks nothing up
    ([1, 4, 4, 5], [10, 7, 7, 0]),         # rank 0 asks nothing of shard 1
    ([6, 9, 9], [8, 10]),                  # nobody asks anything of shard 0
    ([2, 2, 2, 8], [5, 2]),
]


def _batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_id [B], upstream gradient [B, DIM]) of ``rank`` at ``step``."""
    n_id = torch.tensor(BATCHES[step][rank], dtype=torch.long)
    upstream = torch.randn(n_id.numel(), DIM,
                           generator=torch.Generator().manual_seed(1000 * step + rank))
    return n_id, upstream


def _reference(world_size: int) -> dict[str, list | torch.Tensor]:
    """Per-step outputs of each rank, per-step gradients and the final table of one
    FullNodeEmbedding in one process fed, per step, the concatenated batches of the
    ``world_size`` ranks with their upstream gradients divided by ``world_size``. Its gradient
    is then ``(1 / W) sum_r scatter_add(n_id_r, upstream_r)``, the rank average every placement
    applies (a rank with an empty batch counts in ``W``), and its SparseAdam takes one step per
    step like each replica or shard (an empty gradient advances the step count too).

    Adam is blind to the gradient's scale (but for ``eps``), so the tables alone would not
    tell an average from a sum: the gradients are compared as well."""
    ref = FullNodeEmbedding(NUM_NODES, DIM, seed=SEED)
    opt = ref.embedding_optimizer(LR)
    outputs, grads = [], []
    for step in range(len(BATCHES)):
        batches = [_batch(step, r) for r in range(world_size)]
        outputs.append([ref.weight.detach()[n_id].clone() for n_id, _ in batches])
        n_id = torch.cat([b[0] for b in batches])
        upstream = torch.cat([b[1] for b in batches]) / world_size
        opt.zero_grad(set_to_none=True)
        ref(n_id).backward(upstream)
        grads.append(ref.weight.grad.to_dense())
        opt.step()
    return {"outputs": outputs, "grads": grads, "weight": ref.weight.detach().clone()}


def _train(table: NodeInput, steps: range, rank: int,
           opt: torch.optim.Optimizer | None = None) -> dict[str, list[torch.Tensor]]:
    """Train ``table`` on ``rank``'s batches: the outputs and the synced dense gradients of
    its parameter (the table, or this rank's shard) at each step."""
    opt = opt or table.embedding_optimizer(LR)
    outputs, grads = [], []
    for step in steps:
        n_id, upstream = _batch(step, rank)
        opt.zero_grad(set_to_none=True)
        out = table(n_id)
        out.backward(upstream)
        table.sync_gradients()
        grads.append(table.embedding_parameters()[0].grad.to_dense())
        opt.step()
        outputs.append(out.detach().clone())
    return {"outputs": outputs, "grads": grads}


# ---------------------------------------------------------------- shared initialization

@pytest.mark.parametrize("num_nodes, dim", [(11, 3), (3, 2), (4, 4), (17, 1), (40, 7), (64, 4)])
@pytest.mark.parametrize("chunk", [16, 48, 1 << 22])
def test_fill_seeded_normal_equals_one_draw(monkeypatch, num_nodes, dim, chunk):
    # Entry counts below 16, multiples of 16 and neither; several chunks; every row range.
    monkeypatch.setattr(full_table, "_INIT_CHUNK", chunk)
    whole = torch.empty(num_nodes, dim).normal_(generator=torch.Generator().manual_seed(SEED))
    for start, stop in [(0, num_nodes), (0, num_nodes // 2), (num_nodes // 3, num_nodes - 1),
                        (num_nodes - 1, num_nodes), (1, 1)]:
        out = full_table.fill_seeded_normal_(torch.empty(stop - start, dim), num_nodes, SEED,
                                             start=start)
        assert torch.equal(out, whole[start:stop]), (start, stop)


# ---------------------------------------------------------------- DeviceNodeEmbedding

def test_device_table_starts_as_the_host_table_and_reads_rows():
    torch.manual_seed(1)  # the global RNG plays no part
    emb = DeviceNodeEmbedding(NUM_NODES, DIM, seed=SEED)
    assert torch.equal(emb.weight, FullNodeEmbedding(NUM_NODES, DIM, seed=SEED).weight)
    n_id = torch.tensor([5, 1, 5, 10])
    torch.testing.assert_close(emb(n_id), emb.weight.detach()[n_id])
    assert emb.embedding_parameters() == [emb.weight]
    assert emb.ddp_ignored_names() == ["embedding.weight"]
    assert list(emb.state_dict()) == ["embedding.weight"]  # the host table's key
    assert repr(emb) == "DeviceNodeEmbedding(\n  11, 4, device=cpu\n  (embedding): " \
                        "Embedding(11, 4, sparse=True)\n)"


def test_device_table_trains_like_the_host_table():
    host = FullNodeEmbedding(NUM_NODES, DIM, seed=SEED)
    device = DeviceNodeEmbedding(NUM_NODES, DIM, seed=SEED)
    assert isinstance(device.embedding_optimizer(LR), torch.optim.SparseAdam)
    steps = range(len(BATCHES))
    got, expected = _train(device, steps, rank=1), _train(host, steps, rank=1)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(device.weight.detach(), host.weight.detach())


def test_device_table_errors():
    with pytest.raises(ValueError, match=r"'DeviceNodeEmbedding' needs a positive integer embedding_dim, got 0"):
        DeviceNodeEmbedding(4, 0)
    with pytest.raises(IndexError, match=r"'DeviceNodeEmbedding': node id 4 is outside \[0, num_nodes=4\)"):
        DeviceNodeEmbedding(4, 2)(torch.tensor([4]))


# ---------------------------------------------------------------- ShardedNodeEmbedding, one process

@pytest.mark.parametrize("num_nodes, world_size, expected", [
    (11, 2, [(0, 6), (6, 11)]),
    (5, 4, [(0, 2), (2, 4), (4, 5), (5, 5)]),  # the last rank owns nothing
    (3, 1, [(0, 3)]),
])
def test_rows_of_rank(num_nodes, world_size, expected):
    assert [rows_of_rank(num_nodes, world_size, r) for r in range(world_size)] == expected


def test_rows_of_rank_errors():
    with pytest.raises(ValueError, match=r"needs rank in \[0, world_size=2\), got 2"):
        rows_of_rank(11, 2, 2)
    with pytest.raises(ValueError, match=r"'rows_of_rank' needs a positive integer world_size, got 0"):
        rows_of_rank(11, 0, 0)


def test_sharded_table_in_one_process_is_one_shard():
    emb = ShardedNodeEmbedding(NUM_NODES, DIM, seed=SEED)
    assert (emb.world_size, emb.row_start, emb.row_stop) == (1, 0, NUM_NODES)
    host = FullNodeEmbedding(NUM_NODES, DIM, seed=SEED)
    assert torch.equal(emb.full_weight(), host.weight.detach())
    steps = range(len(BATCHES))
    got, expected = _train(emb, steps, rank=0), _train(host, steps, rank=0)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(emb.full_weight(), host.weight.detach())
    assert emb.comm_bytes_sent == 0
    assert emb.embedding_parameters() == [emb.weight] and emb.ddp_ignored_names() == ["weight"]
    assert repr(emb) == "ShardedNodeEmbedding(11, 4, rows=[0, 11), rank=0/1, device=cpu)"


def test_sharded_gradient_is_the_shard_rows_sum():
    emb = ShardedNodeEmbedding(6, 3)
    n_id = torch.tensor([5, 1, 5, 2])
    upstream = torch.randn(4, 3)
    emb(n_id).backward(upstream)
    expected = torch.zeros(6, 3).index_add_(0, n_id, upstream)
    # One entry per row (autograd drops the coalesced flag when it stores the gradient).
    assert emb.weight.grad.is_sparse
    assert emb.weight.grad._indices().tolist() == [[1, 2, 5]]
    torch.testing.assert_close(emb.weight.grad.to_dense(), expected)


def test_shard_state_dict_round_trip(tmp_path):
    emb = ShardedNodeEmbedding(NUM_NODES, DIM, seed=SEED)
    opt = emb.embedding_optimizer(LR)
    _train(emb, range(2), rank=1, opt=opt)
    torch.save(emb.shard_state_dict(opt), tmp_path / "shard.pt")
    # The module's own state_dict, read by every rank, holds no rows.
    assert emb.state_dict() == {}
    fresh = ShardedNodeEmbedding(NUM_NODES, DIM, seed=SEED + 1)
    fresh_opt = fresh.embedding_optimizer(LR)
    fresh.load_shard_state_dict(torch.load(tmp_path / "shard.pt", weights_only=True), fresh_opt)
    assert torch.equal(fresh.weight, emb.weight)
    # Same optimizer state: the next steps agree.
    got = _train(fresh, range(2, 5), rank=1, opt=fresh_opt)
    torch.testing.assert_close(got, _train(emb, range(2, 5), rank=1, opt=opt), rtol=0, atol=0)
    assert torch.equal(fresh.weight, emb.weight)


def test_shard_state_dict_errors():
    emb = ShardedNodeEmbedding(NUM_NODES, DIM)
    opt = emb.embedding_optimizer(LR)
    state = emb.shard_state_dict()
    with pytest.raises(ValueError, match=r"the shard was saved without optimizer state"):
        emb.load_shard_state_dict(state, opt)
    with pytest.raises(ValueError, match=r"not a shard state dict \(missing row_start, row_stop\)"):
        emb.load_shard_state_dict({k: v for k, v in state.items() if not k.startswith("row_")})
    with pytest.raises(ValueError, match=r"the shard belongs to a 11 x 4 table, this table is 12 x 4"):
        ShardedNodeEmbedding(12, DIM).load_shard_state_dict(state)
    with pytest.raises(RuntimeError, match=r"weight would give every rank the same rows; restore "
                                           r"each rank's shard with load_shard_state_dict"):
        emb.load_state_dict({"weight": emb.weight.detach()})
    emb.load_state_dict({})  # nothing to load, nothing missing


def test_sharded_table_errors():
    with pytest.raises(ValueError, match=r"'ShardedNodeEmbedding' needs a positive integer num_nodes, got -1"):
        ShardedNodeEmbedding(-1, 2)
    with pytest.raises(ValueError, match=r"got a process_group but torch.distributed is not initialized"):
        ShardedNodeEmbedding(4, 2, process_group=object())
    with pytest.raises(IndexError, match=r"'ShardedNodeEmbedding': node id 4 is outside"):
        ShardedNodeEmbedding(4, 2)(torch.tensor([0, 4]))


def test_sharded_comm_bytes_by_hand():
    # 5 rows over 2 ranks: rank 0 owns [0, 3), rank 1 [3, 5). Rank 0 asks for {0, 4}, rank 1
    # for {1}: rank 0 serves rows 0 and 1, rank 1 serves row 4. Each sends 2 int64 counts.
    n_ids = [torch.tensor([0, 4, 4]), torch.tensor([1])]
    assert sharded_comm_bytes(n_ids, 5, 3) == [8 * 2 + 8 * 2 + (2 + 2) * 3 * 4,
                                               8 * 2 + 8 * 1 + (1 + 1) * 3 * 4]
    assert sharded_comm_bytes(n_ids, 5, 3, element_size=8)[1] == 8 * 2 + 8 * 1 + (1 + 1) * 3 * 8
    assert sharded_comm_bytes([torch.tensor([0, 4])], 5, 3) == [0]


# ---------------------------------------------------------------- two processes (gloo)

def _placements_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # the tables must not depend on the global RNG
    steps = range(len(BATCHES))
    result = {}
    for name, cls in (("host", FullNodeEmbedding), ("device", DeviceNodeEmbedding)):
        table = cls(NUM_NODES, DIM, seed=SEED)
        result[name] = {**_train(table, steps, rank), "weight": table.weight.detach()}
    sharded = ShardedNodeEmbedding(NUM_NODES, DIM, seed=SEED)
    initial = sharded.full_weight()
    opt = sharded.embedding_optimizer(LR)
    trained, comm_bytes = {"outputs": [], "grads": []}, []
    for step in steps:
        sharded.comm_bytes_sent = 0
        for key, values in _train(sharded, range(step, step + 1), rank, opt).items():
            trained[key] += values
        comm_bytes.append(sharded.comm_bytes_sent)
    result["sharded"] = {**trained, "weight": sharded.full_weight(),
                         "initial": initial, "comm_bytes": comm_bytes,
                         "bounds": (sharded.row_start, sharded.row_stop)}
    torch.save(sharded.shard_state_dict(opt), f"{out_dir}/shard{rank}.pt")
    # Each rank restores its own shard into a new table and both keep training alike.
    fresh = ShardedNodeEmbedding(NUM_NODES, DIM, seed=SEED + 1)
    fresh_opt = fresh.embedding_optimizer(LR)
    fresh.load_shard_state_dict(torch.load(f"{out_dir}/shard{rank}.pt", weights_only=True),
                                fresh_opt)
    result["resumed"] = {**_train(fresh, steps, rank, fresh_opt), "weight": fresh.full_weight(),
                         "continued": _train(sharded, steps, rank, opt),
                         "continued_weight": sharded.full_weight()}
    torch.save(result, f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("full_tables")
    spawn(_placements_worker, (str(out / "init"), str(out)))
    return out, [torch.load(out / f"{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["host", "device", "sharded"])
def test_placements_match_one_process_reference(two_ranks, placement):
    _, results = two_ranks
    ref = _reference(world_size=2)
    for rank in (0, 1):
        got = results[rank][placement]
        # The sharded gradient covers the rank's own rows only.
        start, stop = got.get("bounds", (0, NUM_NODES))
        for step in range(len(BATCHES)):
            where = f"rank {rank}, step {step}"
            torch.testing.assert_close(got["outputs"][step], ref["outputs"][step][rank],
                                       msg=where)
            torch.testing.assert_close(got["grads"][step], ref["grads"][step][start:stop],
                                       msg=where)
        torch.testing.assert_close(got["weight"], ref["weight"])
    if placement == "sharded":
        assert [r["sharded"]["bounds"] for r in results] == [(0, 6), (6, 11)]
        assert torch.equal(results[0]["sharded"]["initial"],
                           FullNodeEmbedding(NUM_NODES, DIM, seed=SEED).weight.detach())


@pytest.mark.slow
def test_sharded_comm_counter_equals_formula(two_ranks):
    _, results = two_ranks
    for step in range(len(BATCHES)):
        expected = sharded_comm_bytes([_batch(step, r)[0] for r in (0, 1)], NUM_NODES, DIM)
        assert [r["sharded"]["comm_bytes"][step] for r in results] == expected, step


@pytest.mark.slow
def test_sharded_resume_from_shards(two_ranks):
    out, results = two_ranks
    for rank in (0, 1):
        resumed = results[rank]["resumed"]
        torch.testing.assert_close(resumed["outputs"], resumed["continued"]["outputs"],
                                   rtol=0, atol=0)
        assert torch.equal(resumed["weight"], resumed["continued_weight"])
    # A shard of a world of two does not load in a world of one.
    single = ShardedNodeEmbedding(NUM_NODES, DIM, seed=SEED)
    with pytest.raises(ValueError, match=r"the shard holds rows \[0, 6\) of rank 0 of 2, but "
                                         r"this is rank 0 of 1, owning rows \[0, 11\): load "
                                         r"each rank's shard under the world size it was "
                                         r"saved with"):
        single.load_shard_state_dict(torch.load(out / "shard0.pt", weights_only=True))
