"""The trained model: an input layer (TT / full table / features, or a table beside the
features) followed by a block GNN, with the parameter split for separate optimizers and the DDP
wrapping that suits each input."""
from __future__ import annotations

import sys

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from gnn_tt.common import comm
from gnn_tt.common.checks import check_positive_int
from gnn_tt.data.graph import CSRGraph
from gnn_tt.sampling.sampler import MiniBatch
from .block_gnn import BlockGNN
from gnn_tt.embedding.node_input import NodeInput


class NodeClassifier(nn.Module):
    r"""Node classification over sampled mini-batches: ``gnn(node_input(batch.n_id),
    batch.blocks)``.

    Args:
        node_input (NodeInput): maps node ids to input vectors.
        gnn (BlockGNN): ``GraphSAGE`` or ``GAT`` with
            ``in_channels == node_input.embedding_dim``.

    Shapes:
        - **input:** ``MiniBatch`` with ``n_id`` ``[num_input_nodes]`` and its blocks
        - **output:** logits ``[batch.batch_size, num_classes]``

    Example::

        >>> model = NodeClassifier(build_node_input("tt", num_nodes=n, embedding_dim=100,
        ...                                         row_of_node=ra.row_of_node,
        ...                                         tt_p_shapes=p), GraphSAGE(100, 256, 47))
        >>> gnn_opt = torch.optim.Adam(model.gnn_parameters(), lr=3e-3)
        >>> emb_opt = model.node_input.embedding_optimizer(lr=1e-2)
        >>> ddp = wrap_ddp(model)
        >>> loss = F.cross_entropy(ddp(batch), y[batch.n_id[:batch.batch_size]])
        >>> loss.backward(); model.node_input.sync_gradients()
    """

    def __init__(self, node_input: NodeInput, gnn: BlockGNN) -> None:
        super().__init__()
        if node_input.embedding_dim != gnn.in_channels:
            raise ValueError(f"'{self.__class__.__name__}': the input layer's embedding_dim "
                             f"({node_input.embedding_dim}) must equal the GNN's in_channels "
                             f"({gnn.in_channels})")
        self.node_input = node_input
        self.gnn = gnn

    def forward(self, batch: MiniBatch) -> Tensor:
        return self.gnn(self.node_input(batch.n_id), batch.blocks)

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The node table's parameters (TT cores or the full table; none for features)."""
        return self.node_input.embedding_parameters()

    def gnn_parameters(self) -> list[nn.Parameter]:
        """Every other parameter, for the dense optimizer: the GNN's and a feature
        projection's (see ``ConcatInput``)."""
        table = {id(p) for p in self.embedding_parameters()}
        return [p for p in self.parameters() if id(p) not in table]

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters of each part: the input's learned parts (``tt_cores``,
        ``full_table``, ``feature_projection``, those present) and ``gnn``."""
        return {**self.node_input.parameter_counts(),
                "gnn": sum(p.numel() for p in self.gnn.parameters())}

    def ddp_ignored_names(self) -> list[str]:
        """Fully qualified names DDP must skip (see ``NodeInput.ddp_ignored_names``)."""
        return [f"node_input.{name}" for name in self.node_input.ddp_ignored_names()]

    @torch.no_grad()
    def inference(self, graph: CSRGraph, batch_size: int,
                  device: torch.device | str | None = None, progress: bool = False) -> Tensor:
        r"""Full-neighbour logits of every node: the input vectors of all nodes (in batches,
        kept in host memory) fed to ``gnn.inference``.

        Its lookups are the same batches of ids in the same order wherever it runs, so an
        input whose lookups are collective (a table sharded over the ranks) works when every
        rank calls it: each then computes every node.

        Args:
            graph (CSRGraph): the graph.
            batch_size (int): nodes per step.
            device (torch.device or str, optional): where the layers run (default: the GNN's
                device).
            progress (bool): show tqdm bars when stderr is a terminal (default: ``False``).

        Shapes:
            - **output:** ``[graph.num_nodes, num_classes]`` on the host
        """
        if graph.num_nodes != self.node_input.num_nodes:
            raise ValueError(f"'{self.__class__.__name__}': graph has {graph.num_nodes} nodes "
                             f"but the input layer has {self.node_input.num_nodes}")
        check_positive_int("batch_size", batch_size, self.__class__.__name__)
        dtype = next(self.gnn.parameters()).dtype
        x_all = torch.empty(graph.num_nodes, self.node_input.embedding_dim,
                            dtype=dtype)                                     # [N, D] host
        starts = range(0, graph.num_nodes, batch_size)
        for start in tqdm(starts, desc="input vectors",
                          disable=not (progress and sys.stderr.isatty())):
            n_id = torch.arange(start, min(start + batch_size, graph.num_nodes))
            x_all[start:start + n_id.numel()] = self.node_input(n_id).cpu()
        return self.gnn.inference(x_all, graph, batch_size, device=device, progress=progress)


def wrap_ddp(model: NodeClassifier, **ddp_kwargs) -> DistributedDataParallel:  # noqa: ANN003
    r"""Wrap ``model`` in ``DistributedDataParallel`` leaving out what DDP must not touch:
    the host-resident full table (it syncs its sparse gradient itself:
    ``model.node_input.sync_gradients()`` after ``backward()``) and the large per-node
    buffers (``row_of_node``, features) that every rank builds identically. The GNN, the TT
    cores and a feature projection are broadcast from rank 0 and all-reduced as usual.

    The wrapper counts what it communicates per step into the active
    :class:`~gnn_tt.common.comm.CommCounter`: each gradient bucket it all-reduces (a comm
    hook doing DDP's default all-reduce) and the buffers it broadcasts before a forward.

    Args:
        model (NodeClassifier): the model, already on its device.
        **ddp_kwargs: passed to ``DistributedDataParallel`` (e.g. ``device_ids``).
    """
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, model.ddp_ignored_names())
    ddp = DistributedDataParallel(model, **ddp_kwargs)
    ddp.register_comm_hook(None, comm.counted_allreduce_hook)
    ddp.register_forward_pre_hook(comm.counted_buffer_broadcast)
    return ddp
