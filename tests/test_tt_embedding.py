import inspect
import math

import pytest
import torch

import gnn_tt.embedding.tt_embedding as tt_embedding_module
from gnn_tt import TTEmbedding
from gnn_tt.embedding.node_input import TTNodeEmbedding, build_node_input
from gnn_tt.training.config import TrainConfig
from kernels.tt_lookup_torch import tt_full_weight, tt_lookup_torch

# p = (3, 4, 5), q = (3, 2, 2), R = (4, 2): R_{k-1} q_k <= p_k R_k for every core k
# (3 <= 12, 8 <= 8, 4 <= 5), so the ortho grid has orthogonal columns.
SMALL = dict(num_embeddings=50, embedding_dim=12, tt_ranks=[4, 2], tt_p_shapes=[3, 4, 5],
             tt_q_shapes=[3, 2, 2])


@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 1, 4)])
def test_forward_any_index_shape_matches_dense_gather(shape):
    emb = TTEmbedding(**SMALL, backend="torch")
    ids = torch.randint(0, 50, shape, generator=torch.Generator().manual_seed(0))
    out = emb(ids)
    assert out.shape == (*shape, 12)
    torch.testing.assert_close(out, emb.full_weight()[ids])


@pytest.mark.parametrize("p, q, ranks", [([7, 8], [3, 5], [6]), ([3, 4, 5], [3, 1, 3], [2, 3]),
                                         ([2, 3, 2, 3], [2, 2, 1, 3], [2, 2, 2])])
def test_every_core_grad_vs_dense_reconstruction(p, q, ranks):
    n, dim = math.prod(p) - 1, math.prod(q)
    emb = TTEmbedding(n, dim, ranks, p, q, init="gaussian", dtype=torch.float64)
    ids = torch.tensor([[0, n - 1, 3], [3, 3, 1]])
    grad_out = torch.randn(2, 3, dim, dtype=torch.float64)
    grads = torch.autograd.grad(emb(ids), list(emb.cores), grad_out)
    ref = torch.autograd.grad(emb.full_weight()[ids], list(emb.cores), grad_out)
    for got, want in zip(grads, ref):
        torch.testing.assert_close(got, want)


def test_ortho_columns_orthogonal_with_documented_scale():
    emb = TTEmbedding(**SMALL, init="ortho", init_scale=2.0, dtype=torch.float64)
    grid = tt_full_weight(list(emb.cores))  # all prod(p) = 60 rows
    # W^T W = init_scale^2 * P / D * I, i.e. mean square entry init_scale^2 / D
    torch.testing.assert_close(grid.T @ grid, 4.0 * 60 / 12 * torch.eye(12, dtype=torch.float64))


# (N, D, ranks, p, q): each has a core with R_{k-1} q_k > p_k R_k, which ortho once refused.
ORTHO_SHAPES = [
    (1000, 24, 4, [10, 10, 10], [2, 3, 4]),  # core 3: 4 * 4 > 10 * 1
    (50, 12, [4, 3], [3, 4, 5], [3, 2, 2]),  # core 3: 3 * 2 > 5 * 1
    (56, 12, [20], [7, 8], [3, 4]),  # core 2 of 2: 20 * 4 > 8 * 1
    (36, 16, [3, 5, 2], [2, 3, 2, 3], [2, 2, 2, 2]),  # cores 3, 4 of 4: 5 * 2 > 2 * 2, ...
    (60, 12, [6, 2], [3, 4, 5], [2, 2, 3]),  # cores 2, 3: 6 * 2 > 4 * 2, 2 * 3 > 5 * 1
]


def _unfolding(core: torch.Tensor) -> torch.Tensor:
    """Core (R_in, p, q, R_out) as the (R_in q, p R_out) matrix: rows (r_in, j), columns
    (i, r_out)."""
    r_in, p, q, r_out = core.shape
    return core.permute(0, 2, 1, 3).reshape(r_in * q, p * r_out)


@pytest.mark.parametrize("num, dim, ranks, p, q", ORTHO_SHAPES)
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_ortho_any_shape_has_the_gaussian_mean_square(num, dim, ranks, p, q, scale):
    torch.manual_seed(0)
    emb = TTEmbedding(num, dim, ranks, p, q, init="ortho", init_scale=scale, dtype=torch.float64)
    grid = tt_full_weight(list(emb.cores))  # all prod(p) rows
    # the gaussian init's target: E[W_ij^2] = init_scale^2 / D, met exactly over the grid
    assert grid.pow(2).mean().item() == pytest.approx(scale ** 2 / dim, rel=1e-9)


@pytest.mark.parametrize("num, dim, ranks, p, q", ORTHO_SHAPES + [
    (2_449_029, 100, 32, [125, 140, 140], [4, 5, 5])])  # products, core 3: 32 * 5 > 140 * 1
def test_ortho_cores_are_semi_orthogonal(num, dim, ranks, p, q):
    torch.manual_seed(0)
    emb = TTEmbedding(num, dim, ranks, p, q, init="ortho", dtype=torch.float64)
    factors = []
    for core in emb.cores:
        unfolding = _unfolding(core.detach())
        rows, cols = unfolding.shape
        # orthonormal rows where the unfolding is wide (or square), else orthonormal columns
        gram = unfolding @ unfolding.T if rows <= cols else unfolding.T @ unfolding
        factors.append(gram[0, 0].item())
        torch.testing.assert_close(gram, factors[-1] * torch.eye(min(rows, cols),
                                                                 dtype=torch.float64))
    assert factors == pytest.approx([factors[0]] * len(factors))  # one scale for all cores


def test_ortho_products_shape_rows_have_the_target_scale():
    # ogbn-products at rank 32: too large for full_weight(); sampled rows estimate the mean.
    torch.manual_seed(0)
    emb = TTEmbedding(2_449_029, 100, tt_ranks=32, tt_p_shapes=[125, 140, 140],
                      tt_q_shapes=[4, 5, 5], init="ortho")
    with torch.no_grad():
        rows = emb(torch.randint(0, 2_449_029, (20_000,)))
    assert rows.pow(2).mean().item() == pytest.approx(1 / 100, rel=0.1)


def test_default_init_agrees_with_the_cli():
    defaults = {inspect.signature(TTEmbedding).parameters["init"].default,
                inspect.signature(TTNodeEmbedding).parameters["init"].default,
                inspect.signature(build_node_input).parameters["tt_init"].default,
                TrainConfig().tt_init}
    assert defaults == {"gaussian"}
    assert TTEmbedding(**SMALL).init == "gaussian"


def test_gaussian_entry_variance_matches_target():
    torch.manual_seed(0)
    emb = TTEmbedding(1000, 64, tt_ranks=[8, 8], tt_p_shapes=[10, 10, 10],
                      tt_q_shapes=[4, 4, 4], init="gaussian", init_scale=3.0)
    weight = emb.full_weight().detach()
    # target Var(W_ij) = init_scale^2 / D; the estimate over 64k entries of a few
    # draws of the cores is loose, so the band is wide but excludes 1/D and 1
    assert 0.5 * 9 / 64 < weight.var().item() < 2.0 * 9 / 64
    assert abs(weight.mean().item()) < 0.1 * math.sqrt(9 / 64)


@pytest.mark.parametrize("ranks", [[6, 15], [40, 40]])
def test_from_dense_full_ranks_reproduce(ranks):
    weight = torch.randn(50, 12, dtype=torch.float64)
    emb = TTEmbedding.from_dense(weight, ranks, [3, 4, 5], [2, 2, 3])
    assert emb.tt_ranks == ranks and emb.cores[0].dtype == torch.float64
    torch.testing.assert_close(emb.full_weight(), weight)


def test_from_dense_truncation_is_exact_for_low_tt_rank_weight():
    source = TTEmbedding(60, 12, [2, 2], [3, 4, 5], [2, 2, 3], init="gaussian",
                         dtype=torch.float64)
    weight = source.full_weight().detach()
    rebuilt = TTEmbedding.from_dense(weight, 2, [3, 4, 5], [2, 2, 3])
    torch.testing.assert_close(rebuilt.full_weight(), weight)
    truncated = TTEmbedding.from_dense(torch.randn(60, 12, dtype=torch.float64), 1,
                                       [3, 4, 5], [2, 2, 3])
    assert truncated.num_parameters == 1 * 6 + 8 + 15


def test_default_shapes_parameters_and_ratio():
    emb = TTEmbedding(2_449_029, 100, tt_ranks=16, tt_p_shapes=[125, 140, 140],
                      tt_q_shapes=[4, 5, 5])
    assert emb.num_parameters == 8_000 + 179_200 + 11_200  # docs/design.md, section 1
    assert emb.compression_ratio == pytest.approx(2_449_029 * 100 / 198_400)
    auto = TTEmbedding(1000, 64, tt_ranks=4, init="gaussian")
    assert auto.tt_p_shapes == [10, 10, 10] and auto.tt_q_shapes == [4, 4, 4]
    assert [tuple(c.shape) for c in auto.cores] == [(1, 10, 4, 4), (4, 10, 4, 4), (4, 10, 4, 1)]


def test_repr():
    emb = TTEmbedding(**SMALL)
    assert emb.extra_repr() == ("50, 12, tt_p_shapes=[3, 4, 5], tt_q_shapes=[3, 2, 2], "
                                "tt_ranks=[4, 2], init=gaussian, backend=auto")
    assert repr(emb).startswith("TTEmbedding(\n  50, 12,")


def test_state_dict_round_trip():
    emb, other = TTEmbedding(**SMALL), TTEmbedding(**SMALL)
    assert not torch.equal(emb.cores[1], other.cores[1])
    other.load_state_dict(emb.state_dict())
    ids = torch.arange(50)
    assert torch.equal(emb(ids), other(ids))
    assert sorted(emb.state_dict()) == ["cores.0", "cores.1", "cores.2"]


def test_reset_parameters_redraws():
    emb = TTEmbedding(**SMALL)
    before = emb.cores[0].detach().clone()
    emb.reset_parameters()
    assert not torch.equal(before, emb.cores[0])


def test_empty_batch_keeps_shape_and_backprops():
    emb = TTEmbedding(**SMALL)
    out = emb(torch.zeros(0, 3, dtype=torch.long))
    assert out.shape == (0, 3, 12)
    out.sum().backward()
    assert all(torch.count_nonzero(c.grad) == 0 for c in emb.cores)


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    emb = TTEmbedding(**SMALL, init="gaussian")
    target = torch.randn(50, 12)
    opt = torch.optim.Adam(emb.parameters(), lr=0.05)
    ids = torch.arange(50)
    losses = []
    for _ in range(20):
        loss = (emb(ids) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_backend_dispatch(monkeypatch):
    calls = []

    def fake_triton(indices, cores, p, q, deterministic=True, check_range=True):
        calls.append((deterministic, check_range))
        return torch.zeros(indices.numel(), 12)

    monkeypatch.setattr(tt_embedding_module, "_triton_lookup", lambda: fake_triton)
    ids = torch.tensor([1, 2])
    TTEmbedding(**SMALL, backend="triton", deterministic=False)(ids)
    # forward() checked the ids itself: the kernel must not check (and sync) again.
    assert calls == [(False, False)]
    TTEmbedding(**SMALL, backend="auto")(ids)  # CPU cores: the torch path
    assert calls == [(False, False)]
    monkeypatch.setattr(tt_embedding_module, "_triton_lookup", lambda: None)
    with pytest.raises(RuntimeError, match="backend='triton' but kernels.tt_lookup_triton"):
        TTEmbedding(**SMALL, backend="triton")(ids)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_forward_checks_the_id_range_once(monkeypatch, backend):
    # A range check is one torch.aminmax (one host sync on a GPU). forward() makes the lookup's
    # only one, whichever backend runs it; lookup() trusts its caller and makes none.
    monkeypatch.setattr(tt_embedding_module, "_triton_lookup",
                        lambda: lambda i, c, p, q, **_: tt_lookup_torch(i, c, p, q))
    emb = TTEmbedding(**SMALL, backend=backend)
    real_aminmax, calls = torch.aminmax, []
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: calls.append(1) or real_aminmax(*a, **k))
    ids = torch.tensor([[0, 49], [7, 7]])
    out = emb(ids)
    assert len(calls) == 1
    torch.testing.assert_close(emb.lookup(ids.view(-1)), out.view(4, 12))
    assert len(calls) == 1


@pytest.mark.parametrize("ids, error, match", [
    (torch.tensor([0, 50]), IndexError, r"index 50 is out of range \[0, 50\)"),
    (torch.tensor([-3, 4]), IndexError, r"index -3 is out of range"),
    (torch.tensor([1.0]), TypeError, "integer dtype, got torch.float32"),
])
def test_bad_indices(ids, error, match):
    with pytest.raises(error, match=match):
        TTEmbedding(**SMALL)(ids)


@pytest.mark.parametrize("kwargs, match", [
    ({"tt_p_shapes": [3, 4, 4]}, r"product 48 < num_embeddings=50"),
    ({"tt_q_shapes": [3, 2, 3]}, r"product 18 != embedding_dim=12"),
    ({"tt_ranks": [4]}, r"tt_ranks=\[4\]: need 2 inner ranks"),
    ({"init": "xavier"}, "init='xavier' is not one of"),
    ({"backend": "cuda"}, "backend='cuda' is not one of"),
    ({"num_embeddings": 0}, "'TTEmbedding' needs a positive integer num_embeddings, got 0"),
    ({"embedding_dim": True}, "'TTEmbedding' needs a positive integer embedding_dim, got True"),
    ({"init_scale": 0.0}, "init_scale must be > 0, got 0.0"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TTEmbedding(**{**SMALL, **kwargs})


def test_full_weight_refuses_huge_tables():
    emb = TTEmbedding(111_059_956, 128, tt_ranks=16, tt_p_shapes=[512, 500, 500],
                      tt_q_shapes=[8, 4, 4], init="gaussian")
    with pytest.raises(RuntimeError, match="111059956 x 128 = 14215674368 entries exceeds"):
        emb.full_weight()
    assert emb(torch.tensor([111_059_955])).shape == (1, 128)
