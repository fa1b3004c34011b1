import math

import pytest
import torch

import kernels.tt_lookup_torch as ttl
from kernels.tt_lookup_torch import tt_digits, tt_full_weight, tt_lookup_torch

# (p, q, inner ranks): d = 2, 3, 4, odd D, rank 1
SHAPES = [
    ((3, 4), (2, 3), (3,)),
    ((3, 4, 5), (2, 1, 3), (4, 3)),
    ((5, 7, 3), (3, 1, 3), (1, 1)),
    ((2, 3, 2, 3), (2, 2, 1, 3), (2, 3, 2)),
]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def make_cores(p, q, ranks, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    full = [1, *ranks, 1]
    return [torch.randn(full[k], p[k], q[k], full[k + 1], generator=gen, dtype=dtype,
                        requires_grad=True) for k in range(len(p))]


def dense_oracle(cores):
    """Brute-force W[i, j] by the defining chain of small matrix products (float64)."""
    p = [c.shape[1] for c in cores]
    q = [c.shape[2] for c in cores]
    weight = torch.zeros(math.prod(p), math.prod(q), dtype=torch.float64)
    for i in range(math.prod(p)):
        digits_i = [(i // math.prod(p[k + 1:])) % p[k] for k in range(len(p))]
        for j in range(math.prod(q)):
            digits_j = [(j // math.prod(q[k + 1:])) % q[k] for k in range(len(q))]
            chain = torch.ones(1, 1, dtype=torch.float64)
            for core, a, b in zip(cores, digits_i, digits_j):
                chain = chain @ core[:, a, b, :].detach().double()
            weight[i, j] = chain[0, 0]
    return weight


def test_digits_first_core_most_significant():
    ids = torch.tensor([0, 1, 5, 19, 59])
    i1, i2, i3 = tt_digits(ids, [3, 4, 5])
    assert torch.equal((i1 * 4 + i2) * 5 + i3, ids)
    assert i1.tolist() == [0, 0, 0, 0, 2] and i3.tolist() == [0, 1, 0, 4, 4]


@pytest.mark.parametrize("p, q, ranks", SHAPES)
def test_full_weight_matches_brute_force(p, q, ranks):
    cores = make_cores(p, q, ranks)
    torch.testing.assert_close(tt_full_weight(cores), dense_oracle(cores))
    torch.testing.assert_close(tt_full_weight(cores, 7), dense_oracle(cores)[:7])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [3, 1 << 16])
@pytest.mark.parametrize("p, q, ranks", SHAPES)
def test_output_and_every_core_grad_vs_dense(p, q, ranks, chunk_size, dtype):
    cores = make_cores(p, q, ranks, dtype)
    gen = torch.Generator().manual_seed(1)
    # repeated ids, both ends of the grid, random order
    ids = torch.cat([torch.randint(0, math.prod(p), (40,), generator=gen),
                     torch.tensor([0, 0, math.prod(p) - 1, 5, 5, 5])])
    out = tt_lookup_torch(ids, cores, p, q, chunk_size=chunk_size)
    ref = tt_full_weight(cores)[ids]
    torch.testing.assert_close(out, ref, **TOL[dtype])
    grad_out = torch.randn(out.shape, generator=gen, dtype=dtype)
    grads = torch.autograd.grad(out, cores, grad_out)
    ref_grads = torch.autograd.grad(ref, cores, grad_out)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("p, q, ranks", SHAPES)
def test_dense_levels_match_dense_oracle(p, q, ranks):
    # every id (twice): full prefixes, so the levels above the rows take the dense matmul
    cores = make_cores(p, q, ranks)
    ids = torch.arange(math.prod(p)).repeat(2)
    levels = ttl._plan(torch.sort(ids).values, [core.shape for core in cores])
    assert levels[0].piece_parent is None and levels[-1].piece_parent is not None
    out = tt_lookup_torch(ids, cores, p, q)
    ref = tt_full_weight(cores)[ids]
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3),
                           dtype=torch.float64)
    for got, want in zip(torch.autograd.grad(out, cores, grad_out),
                         torch.autograd.grad(ref, cores, grad_out)):
        torch.testing.assert_close(got, want, **TOL[torch.float64])


@pytest.mark.parametrize("p, q, ranks", SHAPES)
def test_gradcheck_float64(p, q, ranks):
    cores = make_cores(p, q, ranks)
    ids = torch.tensor([3, 0, 3, math.prod(p) - 1, 7, 2])
    # fast mode: random directional derivatives, every core perturbed at once
    assert torch.autograd.gradcheck(
        lambda *c: tt_lookup_torch(ids, c, p, q, chunk_size=4), tuple(cores), fast_mode=True)


def test_chunking_is_bitwise_invariant_and_deterministic():
    p, q, ranks = (6, 7, 8), (2, 3, 2), (5, 4)
    cores = make_cores(p, q, ranks, torch.float32)
    ids = torch.randint(0, math.prod(p), (150,), generator=torch.Generator().manual_seed(2))
    grad_out = torch.randn(150, 12)
    results = []
    for chunk in (40, 40, 100_000):
        out = tt_lookup_torch(ids, cores, p, q, chunk_size=chunk)
        results.append((out, torch.autograd.grad(out, cores, grad_out)))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))
    torch.testing.assert_close(results[0][0], results[2][0])  # only the summation order differs


def test_empty_batch():
    cores = make_cores((3, 4), (2, 3), (2,))
    out = tt_lookup_torch(torch.zeros(0, dtype=torch.long), cores, (3, 4), (2, 3))
    assert out.shape == (0, 6)
    grads = torch.autograd.grad(out.sum(), cores)
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_bad_shapes_raise():
    cores = make_cores((3, 4), (2, 3), (2,))
    with pytest.raises(ValueError, match=r"got 2 cores, tt_p_shapes=\[3, 4, 5\]"):
        tt_lookup_torch(torch.tensor([0]), cores, (3, 4, 5), (2, 3, 1))
    with pytest.raises(ValueError, match=r"cores\[1\] has shape \(2, 4, 3, 1\), expected "
                                          r"\(R_in, 5, 3, R_out\)"):
        tt_lookup_torch(torch.tensor([0]), cores, (3, 5), (2, 3))
    with pytest.raises(ValueError, match="'tt_lookup_torch' needs a positive integer chunk_size, "
                                         "got 0"):
        tt_lookup_torch(torch.tensor([0]), cores, (3, 4), (2, 3), chunk_size=0)
