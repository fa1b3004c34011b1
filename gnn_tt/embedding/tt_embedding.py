r"""TTEmbedding: an ``nn.Embedding`` whose table is stored as tensor-train cores."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from gnn_tt.common.checks import check_positive_int
from gnn_tt.embedding.tt_shapes import (DEFAULT_NUM_CORES, TIGHT_ROWS, check_tt_shapes,
                                        choose_tt_shapes, normalize_tt_ranks)
from kernels.tt_lookup_torch import tt_full_weight, tt_lookup_torch

# full_weight() refuses tables above this many entries (1 GiB in float32).
FULL_WEIGHT_LIMIT = 2 ** 28
# Core initializations TTEmbedding offers (TrainConfig.tt_init takes the same names).
INITS = ("gaussian", "ortho")
_BACKENDS = ("auto", "torch", "triton")
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _semi_orthogonal(shape: torch.Size, device: torch.device) -> Tensor:
    r"""A uniformly random float64 core of ``shape`` :math:`(R_{k-1}, p_k, q_k, R_k)` whose
    unfolding :math:`(R_{k-1} q_k) \times (p_k R_k)` (rows :math:`(r_{k-1}, j_k)`, columns
    :math:`(i_k, r_k)`) has orthonormal rows if it has at most as many rows as columns, else
    orthonormal columns: the Q factor of a Gaussian matrix, its signs fixed by R's diagonal."""
    r_in, p, q, r_out = shape
    rows, cols = r_in * q, p * r_out
    gauss = torch.randn(max(rows, cols), min(rows, cols), dtype=torch.float64, device=device)
    basis, triangle = torch.linalg.qr(gauss)  # (max, min), orthonormal columns
    basis = basis * torch.sign(torch.diagonal(triangle))  # unique, so uniformly random
    unfolding = basis.T if rows <= cols else basis  # (rows, cols)
    return unfolding.reshape(r_in, q, p, r_out).permute(0, 2, 1, 3)


def _grid_mean_square(cores: Sequence[Tensor]) -> float:
    r"""Mean square entry of the whole ``prod(p) x D`` grid of the TT ``cores``, without
    forming it: :math:`\|W\|_F^2 = E_d` with :math:`E_0 = [1]` and
    :math:`E_k = \sum_{i, j} G_k[:, i, j, :]^T E_{k-1} G_k[:, i, j, :]`."""
    gram = cores[0].new_ones(1, 1)
    for core in cores:
        gram = torch.einsum("ab,aijc,bijd->cd", gram, core, core)  # (R_k, R_k)
    size = math.prod(core.shape[1] * core.shape[2] for core in cores)
    return gram.item() / size


def _triton_lookup() -> Callable[..., Tensor] | None:
    """``kernels.tt_lookup_triton.tt_lookup_triton``, or None where Triton cannot load."""
    try:
        from kernels.tt_lookup_triton import tt_lookup_triton
    except ImportError:
        return None
    return tt_lookup_triton


class TTEmbedding(nn.Module):
    r"""Embedding table :math:`W \in \mathbb{R}^{N \times D}` in TT-matrix format
    (`Oseledets, 2011 <https://doi.org/10.1137/090752286>`_; TT-Rec, Yin et al., 2021):

    .. math::
        W[i, j] = G_1[0, i_1, j_1, :] \, G_2[:, i_2, j_2, :] \cdots G_d[:, i_d, j_d, 0]

    with row digits :math:`i = (i_1 p_2 + i_2) p_3 + i_3` and column digits
    :math:`j = (j_1 q_2 + j_2) q_3 + j_3` (first core most significant). Rows
    ``num_embeddings..prod(p)-1`` pad the grid and are never looked up.

    Both initializations give entries of mean square ``init_scale**2 / D`` (a row's expected
    squared norm is ``init_scale**2``, like unit-norm input features):

    - ``"gaussian"``: i.i.d. :math:`\mathcal{N}(0, \sigma^2)` cores with
      :math:`\sigma^{2d} \prod_k R_k = \mathrm{init\_scale}^2 / D`, so that each entry of the
      product (a sum over :math:`\prod_k R_k` rank paths) has variance ``init_scale**2 / D``.
    - ``"ortho"``, for every shape: semi-orthogonal cores. The unfolding
      :math:`(R_{k-1} q_k) \times (p_k R_k)` of core :math:`k` has orthonormal rows where
      :math:`R_{k-1} q_k \le p_k R_k`, else orthonormal columns (the Q factor of a Gaussian
      matrix); one factor common to all cores then scales them so that the mean square entry
      of the whole ``prod(p) x D`` grid is exactly ``init_scale**2 / D``. Where every core has
      orthonormal rows, the grid has orthogonal columns of norm
      ``init_scale * sqrt(prod(p) / D)``. (Unscaled orthonormal columns would give entries of
      order ``1 / sqrt(prod(p))``, about 6e-4 for ogbn-products: far too small for a GNN
      input.)

    Args:
        num_embeddings (int): number of rows :math:`N`.
        embedding_dim (int): row size :math:`D`.
        tt_ranks (int or Sequence[int], optional): the ``d - 1`` inner TT ranks, or one rank for
            all. (default: ``16``)
        tt_p_shapes (Sequence[int], optional): row factors, product ``>= N``.
            (default: :obj:`None`, chosen by
            :func:`~gnn_tt.embedding.tt_shapes.choose_tt_shapes` under
            :data:`~gnn_tt.embedding.tt_shapes.TIGHT_ROWS`)
        tt_q_shapes (Sequence[int], optional): column factors, product ``== D``.
            (default: :obj:`None`, exact balanced factors of :math:`D`)
        init (str, optional): ``"gaussian"`` or ``"ortho"`` (any shape). (default:
            ``"gaussian"``, as :attr:`gnn_tt.training.config.TrainConfig.tt_init`)
        backend (str, optional): ``"torch"`` (pure torch, any device), ``"triton"`` (CUDA),
            or ``"auto"``: Triton when the cores are on CUDA and it imports. (default: ``"auto"``)
        deterministic (bool, optional): ask the Triton backend for a deterministic backward
            (the torch backend always is). (default: :obj:`True`)
        init_scale (float, optional): RMS row norm at initialization. (default: ``1.0``)
        num_cores (int, optional): ``d`` when neither shape is given. (default: ``3``)

    Shapes:
        - **input:** integer ids of any shape :math:`(*)` in ``[0, N)``
        - **output:** :math:`(*, D)`

    Example::

        >>> emb = TTEmbedding(2_449_029, 100, tt_ranks=16, tt_p_shapes=[125, 140, 140],
        ...                   tt_q_shapes=[4, 5, 5])
        >>> emb(torch.tensor([[0, 7], [2_449_028, 3]])).shape
        torch.Size([2, 2, 100])
    """

    def __init__(self, num_embeddings: int, embedding_dim: int,
                 tt_ranks: int | Sequence[int] = 16, tt_p_shapes: Sequence[int] | None = None,
                 tt_q_shapes: Sequence[int] | None = None, init: str = "gaussian",
                 backend: str = "auto", deterministic: bool = True, init_scale: float = 1.0,
                 num_cores: int = DEFAULT_NUM_CORES, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = self.__class__.__name__
        for arg, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            check_positive_int(arg, value, name)
        if init not in INITS:
            raise ValueError(f"'{name}': init={init!r} is not one of {INITS}")
        if backend not in _BACKENDS:
            raise ValueError(f"'{name}': backend={backend!r} is not one of {_BACKENDS}")
        if not init_scale > 0:
            raise ValueError(f"'{name}': init_scale must be > 0, got {init_scale!r}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.tt_p_shapes, self.tt_q_shapes = (list(shape) for shape in choose_tt_shapes(
            num_embeddings, embedding_dim, TIGHT_ROWS, num_cores, tt_p_shapes, tt_q_shapes))
        check_tt_shapes(num_embeddings, embedding_dim, self.tt_p_shapes, self.tt_q_shapes)
        self.tt_ranks = normalize_tt_ranks(tt_ranks, len(self.tt_p_shapes))
        self.init, self.backend, self.deterministic = init, backend, deterministic
        self.init_scale = float(init_scale)
        full = [1, *self.tt_ranks, 1]
        self.cores = nn.ParameterList(
            nn.Parameter(torch.empty(full[k], p, q, full[k + 1], device=device, dtype=dtype))
            for k, (p, q) in enumerate(zip(self.tt_p_shapes, self.tt_q_shapes)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Re-draw the cores with ``self.init`` (see the class docstring for the scales)."""
        d = len(self.cores)
        mean_square = self.init_scale ** 2 / self.embedding_dim  # of an entry of W
        if self.init == "gaussian":
            # Var(W) = prod(R) * sigma^(2d)
            sigma = (mean_square / math.prod(self.tt_ranks)) ** (0.5 / d)
            for core in self.cores:
                core.normal_(0.0, sigma)
            return
        bases = [_semi_orthogonal(core.shape, core.device) for core in self.cores]
        # W is homogeneous of degree d in the common factor: its mean square, of degree 2d
        scale = (mean_square / _grid_mean_square(bases)) ** (0.5 / d)
        for core, basis in zip(self.cores, bases):
            core.copy_(basis * scale)

    @classmethod
    def from_dense(cls, weight: Tensor, tt_ranks: int | Sequence[int],
                   tt_p_shapes: Sequence[int] | None = None,
                   tt_q_shapes: Sequence[int] | None = None, **kwargs: Any) -> "TTEmbedding":
        r"""TT-SVD of a dense table: sequential truncated SVDs over the merged modes
        :math:`(i_k, j_k)`, in float64. Ranks at or above the exact TT ranks of ``weight``
        reproduce it (the extra rank directions are zero).

        Args:
            weight (torch.Tensor): the table, :math:`(N, D)`.
            tt_ranks (int or Sequence[int]): inner ranks of the result.
            tt_p_shapes, tt_q_shapes, **kwargs: as in :class:`TTEmbedding`.
        """
        if weight.dim() != 2:
            raise ValueError(f"'{cls.__name__}.from_dense': weight must be 2-D (N, D), got "
                             f"shape {tuple(weight.shape)}")
        num, dim = weight.shape
        emb = cls(num, dim, tt_ranks, tt_p_shapes, tt_q_shapes, init="gaussian",
                  device=weight.device, dtype=weight.dtype, **kwargs)
        p, q, d = emb.tt_p_shapes, emb.tt_q_shapes, len(emb.tt_p_shapes)
        full = torch.zeros(math.prod(p), dim, dtype=torch.float64, device=weight.device)
        full[:num] = weight.detach().to(torch.float64)  # padding rows are zero
        # (i_1..i_d, j_1..j_d) -> (i_1, j_1, i_2, j_2, ...): core k owns the pair (i_k, j_k)
        rest = full.view(*p, *q).permute(*[a for k in range(d) for a in (k, d + k)])
        rank = 1
        for k in range(d - 1):
            rest = rest.reshape(rank * p[k] * q[k], -1)
            u, s, vh = torch.linalg.svd(rest, full_matrices=False)
            keep = min(emb.tt_ranks[k], s.numel())
            core = u.new_zeros(rank * p[k] * q[k], emb.tt_ranks[k])
            core[:, :keep] = u[:, :keep]
            rest = rest.new_zeros(emb.tt_ranks[k], vh.shape[1])
            rest[:keep] = s[:keep, None] * vh[:keep]
            with torch.no_grad():
                emb.cores[k].copy_(core.view(rank, p[k], q[k], -1))
            rank = emb.tt_ranks[k]
        with torch.no_grad():
            emb.cores[-1].copy_(rest.reshape(rank, p[-1], q[-1], 1))
        return emb

    def _lookup(self) -> Callable[..., Tensor]:
        if self.backend == "torch":
            return tt_lookup_torch
        triton_lookup = _triton_lookup()
        if self.backend == "triton" and triton_lookup is None:
            raise RuntimeError(f"'{self.__class__.__name__}': backend='triton' but "
                               f"kernels.tt_lookup_triton cannot be imported")
        if self.backend == "auto" and (triton_lookup is None or not self.cores[0].is_cuda):
            return tt_lookup_torch
        # The ids were checked where they entered (forward(), or the caller of lookup()).
        return lambda *args: triton_lookup(*args, deterministic=self.deterministic,
                                           check_range=False)

    def forward(self, indices: Tensor) -> Tensor:
        name = self.__class__.__name__
        if indices.dtype not in _INT_DTYPES:
            raise TypeError(f"'{name}': indices must have an integer dtype, got {indices.dtype}")
        flat = indices.reshape(-1).long()
        if flat.numel():
            # The lookup's only range check: one host sync for both bounds; lookup() and the
            # kernels behind it trust the ids.
            low, high = torch.stack(torch.aminmax(flat)).tolist()
            if low < 0 or high >= self.num_embeddings:
                bad = low if low < 0 else high
                raise IndexError(f"'{name}': index {bad} is out of range [0, "
                                 f"{self.num_embeddings})")
        return self.lookup(flat).view(*indices.shape, self.embedding_dim)

    def lookup(self, indices: Tensor) -> Tensor:
        r"""Rows ``indices`` of the table, for callers that have already checked the ids
        (as :meth:`forward` does): no check, so no host sync of its own. An id outside
        ``[0, num_embeddings)`` is undefined behaviour (garbage rows or a device-side error).

        Shapes:
            - **input:** ``indices`` int64 :math:`(B)` on the cores' device
            - **output:** :math:`(B, D)`
        """
        if indices.numel() == 0:  # one path for every backend: an empty (0, D) with a grad_fn
            return tt_lookup_torch(indices, list(self.cores), self.tt_p_shapes,
                                   self.tt_q_shapes)
        return self._lookup()(indices, list(self.cores), self.tt_p_shapes, self.tt_q_shapes)

    def full_weight(self) -> Tensor:
        """The dense ``(num_embeddings, embedding_dim)`` table, differentiable w.r.t. the cores;
        refuses tables above ``FULL_WEIGHT_LIMIT`` (2**28) entries."""
        size = self.num_embeddings * self.embedding_dim
        if size > FULL_WEIGHT_LIMIT:
            raise RuntimeError(
                f"'{self.__class__.__name__}': full_weight() of {self.num_embeddings} x "
                f"{self.embedding_dim} = {size} entries exceeds the limit of "
                f"{FULL_WEIGHT_LIMIT}; look rows up with forward() instead")
        return tt_full_weight(list(self.cores), self.num_embeddings)

    @property
    def num_parameters(self) -> int:
        return sum(core.numel() for core in self.cores)

    @property
    def compression_ratio(self) -> float:
        """Entries of the dense table per TT parameter."""
        return self.num_embeddings * self.embedding_dim / self.num_parameters

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, tt_p_shapes={self.tt_p_shapes}, "
                f"tt_q_shapes={self.tt_q_shapes}, tt_ranks={self.tt_ranks}, init={self.init}, "
                f"backend={self.backend}")
