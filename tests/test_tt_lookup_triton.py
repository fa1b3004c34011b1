"""Tests of the fused Triton TT lookup against the pure-torch path and the dense table.

Runs on CPU under the Triton interpreter (small shapes: the interpreter executes every program
in numpy) or, with ``GNN_TT_TRITON_CUDA=1``, compiled on the GPU (``launch/gpu_check.sh``).

The interpreter must be chosen before triton is first imported (each ``@triton.jit`` function,
triton.language's own included, picks it when decorated). When this module is collected after
something else imported triton (torch_geometric does), the kernel tests cannot run in this
process: they are skipped here and ``test_kernel_tests_in_fresh_process`` runs this file in a
fresh interpreter-mode process and fails if any test fails there.
"""
import importlib
import importlib.util
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("triton") is None:  # checked without importing it (see above)
    pytest.skip("triton is not installed (a dependency on Linux x86_64 only)",
                allow_module_level=True)
CUDA_MODE = os.environ.get("GNN_TT_TRITON_CUDA") == "1"
if CUDA_MODE and not torch.cuda.is_available():
    raise RuntimeError("GNN_TT_TRITON_CUDA=1 but torch.cuda.is_available() is False")
_env_before = os.environ.get("TRITON_INTERPRET")
if not CUDA_MODE and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton's first import; restored below
import kernels.tt_lookup_triton as ktt  # noqa: E402

if not CUDA_MODE and ktt.knobs.runtime.interpret and not ktt._interpreted():
    # triton itself is interpreted but this module was imported before the switch: redo it.
    ktt = importlib.reload(ktt)
if _env_before is None:
    os.environ.pop("TRITON_INTERPRET", None)
else:
    os.environ["TRITON_INTERPRET"] = _env_before

from kernels.tt_lookup_torch import tt_full_weight, tt_lookup_torch  # noqa: E402

DEVICE = torch.device("cuda" if CUDA_MODE else "cpu")
KERNELS_RUN_HERE = CUDA_MODE or ktt._interpreted()
needs_kernels = pytest.mark.skipif(
    not KERNELS_RUN_HERE,
    reason="triton was imported before TRITON_INTERPRET=1 could be set; these tests run in "
           "test_kernel_tests_in_fresh_process instead")


@pytest.fixture(autouse=True)
def _interpreter_env(monkeypatch):
    """The interpreter switch is live for the duration of each test (CPU mode)."""
    if not CUDA_MODE:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def make_cores(p, q, rank, dtype=torch.float32, seed=0):
    """Random cores (R_{k-1}, p_k, q_k, R_k) with all inner ranks ``rank``; entries scaled so
    table entries are O(1) whatever the rank."""
    gen = torch.Generator().manual_seed(seed)
    ranks = [1] + [rank] * (len(p) - 1) + [1]
    return [(torch.randn(ranks[k], p[k], q[k], ranks[k + 1], generator=gen, dtype=torch.float64)
             / math.sqrt(ranks[k])).to(dtype=dtype, device=DEVICE).requires_grad_()
            for k in range(len(p))]


def dense_reference(indices, cores, gout):
    """Rows and core gradients from the float64 dense table ``tt_full_weight``: the oracle."""
    cores64 = [c.detach().double().requires_grad_() for c in cores]
    rows = tt_full_weight(cores64)[indices]
    grads = torch.autograd.grad((rows * gout.double()).sum(), cores64)
    return rows.detach(), grads


def run_triton(indices, cores, p, q, gout, deterministic=True):
    out = ktt.tt_lookup_triton(indices, cores, p, q, deterministic=deterministic)
    grads = torch.autograd.grad((out * gout).sum(), cores)
    return out.detach(), grads


def mixed_ids(p):
    """One batch exercising the kernel's paths: repeated ids, the first and the last row, rows
    sharing one (i1, i2) prefix (all its i3, twice) and a uniform sample."""
    num_rows = math.prod(p)
    gen = torch.Generator().manual_seed(1)
    shared_prefix = torch.arange(p[2]).repeat(2) + p[2] * (p[1] + 1)
    return torch.cat([torch.tensor([0, num_rows - 1, 0, num_rows - 1, 5, 5, 5]), shared_prefix,
                      torch.randint(0, num_rows, (24,), generator=gen)])


def assert_close_scaled(actual, expected, rel):
    """|actual - expected| <= rel * max|expected| elementwise (a scale-aware tolerance)."""
    scale = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=0,
                               atol=rel * max(scale, 1e-30))


@needs_kernels
@pytest.mark.parametrize("rank", [1, 8, 16])
# The third shape has 40,000 prefixes: 32-bit prefix sort keys (16-bit in the others).
@pytest.mark.parametrize("p,q", [((3, 4, 5), (2, 3, 2)), ((2, 3, 7), (3, 5, 1)),
                                 ((200, 200, 2), (2, 2, 1))])
def test_fp32_rows_and_grads_match_references(p, q, rank):
    cores = make_cores(p, q, rank)
    ids = mixed_ids(p).to(DEVICE)
    gout = torch.randn(ids.numel(), math.prod(q), generator=torch.Generator().manual_seed(2))
    gout = gout.to(DEVICE)
    out, grads = run_triton(ids, cores, p, q, gout)
    ref_out, ref_grads = dense_reference(ids, cores, gout)
    # fp32 with fp32 accumulation over at most R*R*q terms: 1e-5 of the largest entry.
    assert_close_scaled(out, ref_out, 1e-5)
    for g, rg in zip(grads, ref_grads):
        assert_close_scaled(g, rg, 1e-5)
    torch_out = tt_lookup_torch(ids, cores, p, q)
    torch_grads = torch.autograd.grad((torch_out * gout).sum(), cores)
    assert_close_scaled(out, torch_out.detach(), 1e-5)
    for g, tg in zip(grads, torch_grads):
        assert_close_scaled(g, tg, 1e-5)


@needs_kernels
@pytest.mark.parametrize("rank", [1, 8])
def test_bf16_output_and_grads(rank):
    p, q = (3, 4, 5), (2, 3, 2)
    cores = make_cores(p, q, rank, dtype=torch.bfloat16)
    ids = mixed_ids(p).to(DEVICE)
    gout = torch.randn(ids.numel(), math.prod(q), generator=torch.Generator().manual_seed(3))
    gout = gout.to(device=DEVICE, dtype=torch.bfloat16)
    out, grads = run_triton(ids, cores, p, q, gout)
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in grads)
    ref_out, ref_grads = dense_reference(ids, cores, gout)
    # Accumulation is fp32; the only large error is the final rounding to bf16 (8 mantissa
    # bits, relative 2^-8 of each value), so 2^-7 of the largest entry bounds it.
    assert_close_scaled(out, ref_out, 2 ** -7)
    for g, rg in zip(grads, ref_grads):
        assert_close_scaled(g, rg, 2 ** -7)


@needs_kernels
def test_float64_gradcheck():
    p, q = (2, 3, 2), (2, 1, 3)
    cores = make_cores(p, q, 2, dtype=torch.float64)
    ids = torch.tensor([0, 11, 4, 4], device=DEVICE)
    # fast_mode checks random projections of the Jacobian: a few launches instead of one
    # backward per output entry (the interpreter is slow).
    assert torch.autograd.gradcheck(
        lambda *cs: ktt.tt_lookup_triton(ids, cs, p, q), tuple(cores), eps=1e-6, atol=1e-8,
        fast_mode=True)


@needs_kernels
@pytest.mark.parametrize("chunk_rows,chunk_prefixes", [(4, 2), (1 << 20, 1 << 20)])
def test_deterministic_is_bitwise_reproducible_and_atomic_agrees(monkeypatch, chunk_rows,
                                                                 chunk_prefixes):
    # Small chunks split every slice's run over several programs (partial sums, then the ordered
    # segment sum; atomics in the fast mode); huge chunks give one program per slice.
    monkeypatch.setattr(ktt, "_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(ktt, "_CHUNK_PREFIXES", chunk_prefixes)
    p, q = (2, 3, 4), (2, 2, 3)
    cores = make_cores(p, q, 4)
    # Few distinct prefixes and digits, many rows: long runs per gradient slice.
    ids = torch.randint(0, math.prod(p), (48,), generator=torch.Generator().manual_seed(4))
    ids = ids.to(DEVICE)
    gout = torch.randn(48, math.prod(q), generator=torch.Generator().manual_seed(5)).to(DEVICE)
    _, ref_grads = dense_reference(ids, cores, gout)
    _, first = run_triton(ids, cores, p, q, gout)
    _, second = run_triton(ids, cores, p, q, gout)
    _, atomic = run_triton(ids, cores, p, q, gout, deterministic=False)
    for a, b, c, rg in zip(first, second, atomic, ref_grads):
        assert torch.equal(a, b)
        assert_close_scaled(a, rg, 1e-5)
        assert_close_scaled(c, rg, 1e-5)


@needs_kernels
@pytest.mark.parametrize("chunk_rows,chunk_prefixes", [(1, 1), (3, 2), (7, 5)])
def test_runs_across_many_chunks_match_dense(monkeypatch, chunk_rows, chunk_prefixes):
    # Skewed ids: one hot prefix (every i3 of it, 3 times), one hot i3 (under every prefix) and
    # a uniform tail. The hot runs cross many chunk edges, some end exactly on one, and with
    # chunk 1 every item is a chunk: each run is a tail plus a chain of heads.
    monkeypatch.setattr(ktt, "_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(ktt, "_CHUNK_PREFIXES", chunk_prefixes)
    p, q = (3, 4, 5), (2, 3, 2)
    cores = make_cores(p, q, 3)
    hot_prefix = (p[1] + 2) * p[2] + torch.arange(p[2]).repeat(3)
    hot_i3 = torch.arange(p[0] * p[1]) * p[2] + 4
    tail = torch.randint(0, math.prod(p), (9,), generator=torch.Generator().manual_seed(6))
    ids = torch.cat([hot_prefix, hot_i3, tail]).to(DEVICE)
    gout = torch.randn(ids.numel(), math.prod(q), generator=torch.Generator().manual_seed(7))
    gout = gout.to(DEVICE)
    ref_out, ref_grads = dense_reference(ids, cores, gout)
    for deterministic in (True, False):
        out, grads = run_triton(ids, cores, p, q, gout, deterministic=deterministic)
        assert_close_scaled(out, ref_out, 1e-5)
        for g, rg in zip(grads, ref_grads):
            assert_close_scaled(g, rg, 1e-5)


@needs_kernels
def test_empty_batch_gives_empty_rows_and_zero_grads():
    p, q = (3, 4, 5), (2, 3, 2)
    cores = make_cores(p, q, 3)
    ids = torch.empty(0, dtype=torch.long, device=DEVICE)
    out, grads = run_triton(ids, cores, p, q, torch.empty(0, 12, device=DEVICE))
    assert out.shape == (0, 12)
    for g, c in zip(grads, cores):
        assert g.shape == c.shape and not g.any()


@needs_kernels
def test_int32_ids_and_strided_inputs_match_contiguous():
    p, q = (3, 4, 5), (2, 3, 2)
    cores = make_cores(p, q, 2)
    ids = mixed_ids(p).to(DEVICE)
    expected = ktt.tt_lookup_triton(ids, cores, p, q)
    assert torch.equal(ktt.tt_lookup_triton(ids.int(), cores, p, q), expected)
    # The same values through strided views (every other element of twice-as-long tensors).
    strided_ids = ids.repeat_interleave(2)[::2]
    strided_cores = [c.detach().repeat_interleave(2, dim=2)[:, :, ::2] for c in cores]
    assert not strided_ids.is_contiguous() and not strided_cores[0].is_contiguous()
    assert torch.equal(ktt.tt_lookup_triton(strided_ids, strided_cores, p, q), expected)


@needs_kernels
def test_other_core_counts_fall_back_to_torch_with_one_warning(monkeypatch):
    monkeypatch.setattr(ktt, "_warned_fallback", set())
    p, q = (4, 5), (3, 2)
    cores = make_cores(p, q, 3)
    ids = torch.tensor([0, 19, 7, 7], device=DEVICE)
    with pytest.warns(UserWarning, match="Triton kernels cover 3 cores, got 2"):
        out = ktt.tt_lookup_triton(ids, cores, p, q)
    torch.testing.assert_close(out, tt_lookup_torch(ids, cores, p, q))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ktt.tt_lookup_triton(ids, cores, p, q)  # second call: silent


@needs_kernels
@pytest.mark.parametrize("p,q", [((3, 4, 5), (2, 3, 2)), ((4, 5), (3, 2))])
def test_check_range_false_trusts_the_caller(monkeypatch, p, q):
    # The range is read with torch.aminmax; a caller that has checked its ids (TTEmbedding)
    # passes check_range=False and the lookup reads no range at all, with the same rows.
    monkeypatch.setattr(ktt, "_warned_fallback", {len(p)})  # no fallback warning (2 cores)
    cores = make_cores(p, q, 2)
    ids = mixed_ids(p).to(DEVICE) if len(p) == 3 else torch.tensor([0, 19, 7, 7], device=DEVICE)
    real_aminmax, calls = torch.aminmax, []
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: calls.append(1) or real_aminmax(*a, **k))
    checked = ktt.tt_lookup_triton(ids, cores, p, q)
    assert len(calls) == 1
    trusted = ktt.tt_lookup_triton(ids, cores, p, q, check_range=False)
    assert len(calls) == 1
    assert torch.equal(trusted, checked)


@pytest.mark.parametrize("bad", [-1, 60])
def test_out_of_range_id_raises_before_launch(bad):
    cores = make_cores((3, 4, 5), (2, 3, 2), 2)
    with pytest.raises(ValueError, match=rf"indices: id {bad} is out of range \[0, 60\)"):
        ktt.tt_lookup_triton(torch.tensor([0, bad, 3], device=DEVICE), cores, (3, 4, 5),
                             (2, 3, 2))


def test_bad_inputs_raise_clear_errors():
    p, q = (3, 4, 5), (2, 3, 2)
    cores = make_cores(p, q, 2)
    ids = torch.tensor([0, 1], device=DEVICE)
    with pytest.raises(ValueError, match="indices: dtype torch.float32"):
        ktt.tt_lookup_triton(ids.float(), cores, p, q)
    with pytest.raises(ValueError, match=r"indices: expected a 1-D tensor, got shape \(1, 2\)"):
        ktt.tt_lookup_triton(ids[None], cores, p, q)
    other = torch.device("cpu" if CUDA_MODE else "meta")
    with pytest.raises(ValueError, match=f"indices: device {other}"):
        ktt.tt_lookup_triton(torch.tensor([0, 1], device=other), cores, p, q)
    with pytest.raises(ValueError, match="cores: dtype torch.float16 is not supported"):
        ktt.tt_lookup_triton(ids, [c.half() for c in cores], p, q)
    with pytest.raises(ValueError, match=r"cores\[1\] \(core 2 of 3\): dtype torch.float64"):
        ktt.tt_lookup_triton(ids, [cores[0], cores[1].double(), cores[2]], p, q)
    with pytest.raises(ValueError,
                       match=r"cores\[1\] \(core 2 of 3\): shape \(2, 4, 3, 2\) does not match"):
        ktt.tt_lookup_triton(ids, cores, p, (2, 2, 3))
    with pytest.raises(ValueError, match="one entry per core"):
        ktt.tt_lookup_triton(ids, cores, p[:2], q)


@pytest.mark.skipif(CUDA_MODE, reason="the interpreter switch only matters for CPU tensors")
def test_cpu_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cores = make_cores((3, 4, 5), (2, 3, 2), 2)
    with pytest.raises(RuntimeError, match="set TRITON_INTERPRET=1 before triton is first "
                                           "imported.*backend='torch'"):
        ktt.tt_lookup_triton(torch.tensor([1]), cores, (3, 4, 5), (2, 3, 2))


@pytest.mark.skipif(KERNELS_RUN_HERE, reason="the kernel tests ran in this process")
def test_kernel_tests_in_fresh_process():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("GNN_TT_TRITON_CUDA", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(Path(__file__))], env=env, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    # Everything ran there except this test itself.
    assert "passed" in summary and "1 skipped" in summary, result.stdout[-2000:]
