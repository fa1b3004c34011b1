import math

import pytest
import torch
import torch.distributed as dist

from gnn_tt.embedding import (ConcatInput, FeatureInput, FullNodeEmbedding, TTNodeEmbedding,
                              build_node_input)
from gnn_tt.embedding.node_input import KINDS, kind_parts
from two_process import spawn

P_SHAPES, Q_SHAPES = [2, 3, 2], [3, 2, 1]  # 12 rows, D = 6


def _rows(num_nodes: int = 10) -> torch.Tensor:
    """An injective row map of 10 nodes into the 12 TT rows (2 padding rows unused)."""
    return torch.randperm(math.prod(P_SHAPES), generator=torch.Generator().manual_seed(0))[:num_nodes]


# ---------------------------------------------------------------- TTNodeEmbedding

def test_tt_node_embedding_reads_the_node_row():
    torch.manual_seed(0)
    rows = _rows()
    emb = TTNodeEmbedding(rows, 6, tt_ranks=3, tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES,
                          init="gaussian", backend="torch").double()
    n_id = torch.tensor([4, 0, 4, 9, 2])
    out = emb(n_id)
    assert out.shape == (5, 6)
    torch.testing.assert_close(out, emb.tt(rows[n_id]))
    # Oracle: the dense reconstruction's rows, and every core gradient through it.
    upstream = torch.randn(5, 6, dtype=torch.float64)
    (out * upstream).sum().backward()
    grads = [c.grad.clone() for c in emb.tt.parameters()]
    emb.zero_grad()
    dense = emb.tt.full_weight()
    torch.testing.assert_close(out, dense[rows[n_id]])
    (dense[rows[n_id]] * upstream).sum().backward()
    for got, core in zip(grads, emb.tt.parameters()):
        torch.testing.assert_close(got, core.grad)


@pytest.mark.parametrize("kind", KINDS)
def test_each_input_checks_the_node_ids_once(monkeypatch, kind):
    # A range check is one torch.aminmax (one host sync on a GPU). The node ids are checked
    # where they enter; the TT rows behind them lie in the table by construction, so the TT
    # lookup must not check again, nor the parts of a composite input.
    inp = build_node_input(kind, num_nodes=10, embedding_dim=6, row_of_node=_rows(),
                           tt_ranks=2, tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES,
                           x=torch.randn(10, 6))
    real_aminmax, calls = torch.aminmax, []
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: calls.append(1) or real_aminmax(*a, **k))
    assert inp(torch.tensor([4, 0, 4, 9])).shape == (4, 6 * len(kind_parts(kind)))
    assert len(calls) == 1


def test_tt_node_embedding_parameters_and_buffers():
    emb = TTNodeEmbedding(_rows(), 6, tt_ranks=2, tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES)
    assert emb.num_nodes == 10 and emb.embedding_dim == 6
    assert emb.embedding_parameters() == list(emb.tt.parameters())
    assert isinstance(emb.embedding_optimizer(0.01), torch.optim.Adam)
    assert "row_of_node" not in emb.state_dict()  # rebuilt from the partition, not saved
    assert emb.ddp_ignored_names() == ["row_of_node"]
    # Without tt_p_shapes the table has max(row_of_node) + 1 rows (suggested factors).
    rows = torch.tensor([0, 29, 7])
    assert TTNodeEmbedding(rows, 6, tt_ranks=2, init="gaussian").tt.num_embeddings == 30


def test_tt_node_embedding_errors():
    with pytest.raises(ValueError, match=r"row_of_node holds row 12, outside the TT table's rows \[0, 12\)"):
        TTNodeEmbedding(torch.tensor([0, 12]), 6, tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES)
    with pytest.raises(ValueError, match=r"row_of_node holds row -1"):
        TTNodeEmbedding(torch.tensor([0, -1]), 6, tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES)
    with pytest.raises(ValueError, match=r"needs row_of_node as a 1-D integer tensor, got torch.float32"):
        TTNodeEmbedding(torch.zeros(3), 6, tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES)
    emb = TTNodeEmbedding(_rows(), 6, tt_ranks=2, tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES)
    with pytest.raises(IndexError, match=r"node id 10 is outside \[0, num_nodes=10\)"):
        emb(torch.tensor([1, 10]))  # a valid TT row (10 < 12) but not a node
    with pytest.raises(TypeError, match=r"expects n_id as an integer tensor, got torch.float32"):
        emb(torch.tensor([1.0]))


# ---------------------------------------------------------------- FullNodeEmbedding

def test_full_embedding_forward_and_sparse_gradient():
    emb = FullNodeEmbedding(8, 3)
    n_id = torch.tensor([5, 1, 5, 7])
    out = emb(n_id)
    torch.testing.assert_close(out, emb.weight.detach()[n_id])
    upstream = torch.randn(4, 3)
    (out * upstream).sum().backward()
    assert emb.weight.grad.is_sparse
    expected = torch.zeros(8, 3)
    for b, v in enumerate(n_id.tolist()):  # brute-force scatter-add
        expected[v] += upstream[b]
    torch.testing.assert_close(emb.weight.grad.to_dense(), expected)


def test_full_embedding_init_depends_only_on_seed():
    torch.manual_seed(1)
    a = FullNodeEmbedding(8, 3, seed=4)
    torch.manual_seed(2)
    b = FullNodeEmbedding(8, 3, seed=4)
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, FullNodeEmbedding(8, 3, seed=5).weight)
    assert abs(float(FullNodeEmbedding(4000, 25).weight.detach().std()) - 1.0) < 0.02  # N(0, 1)


def test_full_embedding_table_stays_on_host():
    emb = FullNodeEmbedding(8, 3)
    emb.to(torch.float64)
    assert emb.weight.dtype == torch.float32 and emb.weight.device.type == "cpu"
    emb.to("meta")  # only the output's device follows .to()
    assert emb.weight.device.type == "cpu" and emb.device.type == "meta"
    assert emb(torch.tensor([1, 2])).device.type == "meta"


def test_full_embedding_sparse_adam_updates_only_batch_rows():
    emb = FullNodeEmbedding(8, 3)
    before = emb.weight.detach().clone()
    opt = emb.embedding_optimizer(lr=0.1)
    assert isinstance(opt, torch.optim.SparseAdam)
    emb(torch.tensor([2, 6])).sum().backward()
    opt.step()
    changed = (emb.weight.detach() != before).any(1)
    assert changed.nonzero().flatten().tolist() == [2, 6]


def test_full_embedding_sync_is_a_no_op_without_process_group():
    emb = FullNodeEmbedding(8, 3)
    emb(torch.tensor([2, 6])).sum().backward()
    grad = emb.weight.grad.to_dense().clone()
    emb.sync_gradients()
    assert torch.equal(emb.weight.grad.to_dense(), grad)


def _sync_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # different global RNG per rank: the table must not depend on it
    emb = FullNodeEmbedding(12, 4, seed=3)
    initial = emb.weight.detach().clone()
    n_id = torch.tensor([0, 3, 3, 5]) if rank == 0 else torch.tensor([3, 7, 11])
    upstream = torch.randn(n_id.numel(), 4, generator=torch.Generator().manual_seed(100 + rank))
    emb(n_id).backward(upstream)
    local = emb.weight.grad.to_dense().clone()
    emb.sync_gradients()
    synced = emb.weight.grad.to_dense().clone()
    emb.embedding_optimizer(lr=0.1).step()
    # Second round: rank 1 looks nothing up (its grad stays None).
    emb.zero_grad(set_to_none=True)
    if rank == 0:
        emb(n_id).backward(upstream)
    emb.sync_gradients()
    torch.save({"initial": initial, "local": local, "synced": synced,
                "weight": emb.weight.detach().clone(), "second": emb.weight.grad.to_dense()},
               f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_full_embedding_sync_gradients_two_processes(tmp_path):
    spawn(_sync_worker, (str(tmp_path / "init"), str(tmp_path)))
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert torch.equal(r0["initial"], r1["initial"])
    assert not torch.equal(r0["local"], r1["local"])
    # Identical replicas, equal to the single-process average of the ranks' gradients.
    assert torch.equal(r0["synced"], r1["synced"])
    torch.testing.assert_close(r0["synced"], (r0["local"] + r1["local"]) / 2)
    assert torch.equal(r0["weight"], r1["weight"])
    assert torch.equal(r0["second"], r1["second"])
    torch.testing.assert_close(r0["second"], r0["local"] / 2)
    # The replicas' step equals one SparseAdam step on the averaged gradient.
    ref = FullNodeEmbedding(12, 4, seed=3)
    ref.weight.grad = r0["synced"].to_sparse()
    ref.embedding_optimizer(lr=0.1).step()
    torch.testing.assert_close(r0["weight"], ref.weight.detach())


def test_full_embedding_errors():
    with pytest.raises(ValueError, match=r"'FullNodeEmbedding' needs a positive integer num_nodes, got 0"):
        FullNodeEmbedding(0, 3)
    emb = FullNodeEmbedding(8, 3)
    with pytest.raises(IndexError, match=r"'FullNodeEmbedding': node id -1 is outside \[0, num_nodes=8\)"):
        emb(torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match=r"expects a 1-D n_id, got shape \[2, 1\]"):
        emb(torch.tensor([[1], [2]]))


# ---------------------------------------------------------------- FeatureInput

def test_feature_input_gathers_fixed_features():
    x = torch.randn(10, 5)
    inp = FeatureInput(x)
    n_id = torch.tensor([9, 0, 9])
    assert torch.equal(inp(n_id), x[n_id])
    assert inp.embedding_dim == 5 and list(inp.parameters()) == []
    assert inp.embedding_optimizer(0.1) is None
    assert "x" not in inp.state_dict()
    half = FeatureInput(x.half())(n_id)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, x.half()[n_id].float())


def test_feature_input_errors():
    with pytest.raises(ValueError, match=r"'FeatureInput' needs x as a 2-D floating point tensor \[num_nodes, F\], got torch.int64"):
        FeatureInput(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(IndexError, match=r"node id 3 is outside \[0, num_nodes=3\)"):
        FeatureInput(torch.ones(3, 2))(torch.tensor([3]))


# ---------------------------------------------------------------- build_node_input

def test_build_node_input_kinds():
    rows = _rows()
    tt = build_node_input("tt", num_nodes=10, embedding_dim=6, row_of_node=rows, tt_ranks=2,
                          tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES)
    assert isinstance(tt, TTNodeEmbedding) and torch.equal(tt.row_of_node, rows)
    full = build_node_input("full", num_nodes=10, embedding_dim=6, seed=2)
    assert isinstance(full, FullNodeEmbedding) and torch.equal(full.weight,
                                                               FullNodeEmbedding(10, 6, seed=2).weight)
    feats = build_node_input("features", num_nodes=10, embedding_dim=6, x=torch.randn(10, 4))
    assert isinstance(feats, FeatureInput) and feats.embedding_dim == 4  # the dataset's width
    tt_x = build_node_input("tt+features", num_nodes=10, embedding_dim=6, row_of_node=rows,
                            tt_ranks=2, tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES,
                            x=torch.randn(10, 4))
    assert isinstance(tt_x, ConcatInput) and isinstance(tt_x.learnable, TTNodeEmbedding)
    assert tt_x.embedding_dim == 6 + 4 and tt_x.projection is None
    full_x = build_node_input("full+features", num_nodes=10, embedding_dim=6, seed=2,
                              x=torch.randn(10, 4), feature_proj=3)
    assert isinstance(full_x.learnable, FullNodeEmbedding) and full_x.embedding_dim == 6 + 3
    assert torch.equal(full_x.learnable.weight, full.weight)


def test_kind_parts():
    assert KINDS == ("tt", "full", "features", "tt+features", "full+features")
    assert [k for k in KINDS if "tt" in kind_parts(k)] == ["tt", "tt+features"]
    assert [k for k in KINDS if "features" in kind_parts(k)] == \
        ["features", "tt+features", "full+features"]
    with pytest.raises(ValueError, match=r"unknown node input kind 'tt\+x' \(valid: tt, "):
        kind_parts("tt+x")


def test_build_node_input_errors():
    with pytest.raises(ValueError, match=r"unknown node input kind 'dense' \(valid: tt, full, "
                                         r"features, tt\+features, full\+features\)"):
        build_node_input("dense", num_nodes=10, embedding_dim=6)
    with pytest.raises(ValueError, match=r"the dataset has no node features; use a learned embedding"):
        build_node_input("features", num_nodes=10, embedding_dim=6, x=None)
    with pytest.raises(ValueError, match=r"build_node_input\('full\+features'\): the dataset has "
                                         r"no node features"):
        build_node_input("full+features", num_nodes=10, embedding_dim=6, x=None)
    with pytest.raises(ValueError, match=r"build_node_input\('tt\+features'\) needs row_of_node"):
        build_node_input("tt+features", num_nodes=10, embedding_dim=6, x=torch.randn(10, 4))
    with pytest.raises(ValueError, match=r"build_node_input\('full'\): feature_proj=3 projects "
                                         r"the features beside a learnable table; kind 'full' has "
                                         r"none \(use one of tt\+features, full\+features\)"):
        build_node_input("full", num_nodes=10, embedding_dim=6, feature_proj=3)
    with pytest.raises(ValueError, match=r"x has 9 rows but num_nodes=10"):
        build_node_input("features", num_nodes=10, embedding_dim=6, x=torch.randn(9, 4))
    with pytest.raises(ValueError, match=r"build_node_input\('tt'\) needs row_of_node"):
        build_node_input("tt", num_nodes=10, embedding_dim=6)
    with pytest.raises(ValueError, match=r"row_of_node has 9 entries but num_nodes=10"):
        build_node_input("tt", num_nodes=10, embedding_dim=6, row_of_node=_rows(9),
                         tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES)


# ---------------------------------------------------------------- ConcatInput

def _concat(learnable: str, feature_proj: int | None = None) -> ConcatInput:
    """``tt+features`` or ``full+features`` over 10 nodes: a 6-wide table, 5 features."""
    torch.manual_seed(0)
    return build_node_input(f"{learnable}+features", num_nodes=10, embedding_dim=6,
                            row_of_node=_rows(), tt_ranks=2, tt_p_shapes=P_SHAPES,
                            tt_q_shapes=Q_SHAPES, tt_init="gaussian", backend="torch",
                            x=torch.randn(10, 5), feature_proj=feature_proj, seed=1)


@pytest.mark.parametrize("feature_proj", [None, 3])
@pytest.mark.parametrize("learnable", ["tt", "full"])
def test_concat_input_is_the_concatenation_of_its_parts(learnable, feature_proj):
    inp = _concat(learnable, feature_proj)
    n_id = torch.tensor([9, 0, 9, 4])
    out = inp(n_id)
    # Oracle: the parts called directly.
    feats = inp.features(n_id)
    if feature_proj is not None:
        feats = feats @ inp.projection.weight.T + inp.projection.bias
    torch.testing.assert_close(out, torch.cat([inp.learnable(n_id), feats], dim=1))
    assert out.shape == (4, inp.embedding_dim) == (4, 6 + (feature_proj or 5))


@pytest.mark.parametrize("learnable", ["tt", "full"])
def test_concat_input_gradients_reach_each_learned_part(learnable):
    inp = _concat(learnable, feature_proj=3)
    n_id = torch.tensor([9, 0, 9, 4])
    upstream = torch.randn(4, inp.embedding_dim)
    (inp(n_id) * upstream).sum().backward()
    # The table's gradient equals its own input's under the table's share of upstream.
    alone = _concat(learnable, feature_proj=3).learnable
    (alone(n_id) * upstream[:, :6]).sum().backward()
    for got, want in zip(inp.embedding_parameters(), alone.embedding_parameters()):
        assert got.grad is not None and got.grad.is_sparse == (learnable == "full")
        torch.testing.assert_close(got.grad.to_dense(), want.grad.to_dense())
    # The projection's: d(x W^T + b) = upstream^T x (weight), sum of upstream (bias).
    x = inp.features.x[n_id]
    torch.testing.assert_close(inp.projection.weight.grad, upstream[:, 6:].T @ x)
    torch.testing.assert_close(inp.projection.bias.grad, upstream[:, 6:].sum(0))
    assert list(inp.features.parameters()) == []  # the features stay fixed


def test_concat_input_keeps_each_parts_training():
    tt, full = _concat("tt", feature_proj=3), _concat("full", feature_proj=3)
    # The table alone is the embedding; the projection is a dense parameter (the GNN's
    # optimizer), and the compression ratio compares the table alone with a full table.
    assert tt.embedding_parameters() == list(tt.learnable.tt.parameters())
    assert full.embedding_parameters() == [full.learnable.weight]
    assert isinstance(tt.embedding_optimizer(0.1), torch.optim.Adam)
    assert isinstance(full.embedding_optimizer(0.1), torch.optim.SparseAdam)
    projection = {id(p) for p in tt.projection.parameters()}
    assert projection.isdisjoint(id(p) for p in tt.embedding_parameters())
    assert tt.ddp_ignored_names() == ["learnable.row_of_node", "features.x"]
    assert full.ddp_ignored_names() == ["learnable.embedding.weight", "learnable._device_anchor",
                                        "features.x"]
    cores = sum(p.numel() for p in tt.learnable.tt.parameters())
    assert tt.parameter_counts() == {"tt_cores": cores, "feature_projection": 5 * 3 + 3}
    assert full.parameter_counts() == {"full_table": 60, "feature_projection": 18}
    assert _concat("full").parameter_counts() == {"full_table": 60}
    # Neither the features nor row_of_node are saved: they are data.
    assert set(full.state_dict()) == {"learnable.embedding.weight", "projection.weight",
                                      "projection.bias"}
    # The full table stays on the host whatever .to() asks.
    full.to(torch.float64)
    assert full.learnable.weight.dtype == torch.float32
    assert full.projection.weight.dtype == torch.float64


def test_concat_input_sync_is_the_full_tables():
    inp = _concat("full")
    inp(torch.tensor([2, 6])).sum().backward()
    grad = inp.learnable.weight.grad.to_dense().clone()
    inp.sync_gradients()  # no process group: a no-op, as the table's own
    assert torch.equal(inp.learnable.weight.grad.to_dense(), grad)


def test_concat_input_errors():
    tt = TTNodeEmbedding(_rows(), 6, tt_ranks=2, tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES)
    x = FeatureInput(torch.randn(10, 5))
    with pytest.raises(ValueError, match=r"'ConcatInput' needs a learnable table that implements "
                                         r"lookup \(such as TTNodeEmbedding or "
                                         r"FullNodeEmbedding\) as learnable, got FeatureInput"):
        ConcatInput(x, x)
    with pytest.raises(ValueError, match=r"'ConcatInput' needs a FeatureInput as features, got "
                                         r"TTNodeEmbedding"):
        ConcatInput(tt, tt)
    with pytest.raises(ValueError, match=r"'ConcatInput': learnable has 10 nodes but features "
                                         r"has 9"):
        ConcatInput(tt, FeatureInput(torch.randn(9, 5)))
    with pytest.raises(ValueError, match=r"'ConcatInput' needs a positive integer feature_proj, "
                                         r"got 0"):
        ConcatInput(tt, x, feature_proj=0)
    with pytest.raises(IndexError, match=r"'ConcatInput': node id 10 is outside "
                                         r"\[0, num_nodes=10\)"):
        ConcatInput(tt, x)(torch.tensor([10]))
