import pytest
import torch
import torch.nn.functional as F

from gnn_tt.sampling.sampler import NeighborSampler
from gnn_tt.models import GAT, GraphSAGE, full_neighbour_block
from oracle_blocks import full_blocks, tiny_graph

SEEDS = [3, 9, 0, 5]


def _message_edges(graph):
    """PyG edge_index of the full graph: messages flow from v's CSR neighbours to v."""
    return graph.edge_index().flip(0)


def _sage_dense(model: GraphSAGE, x, graph):
    """GraphSAGE by dense matrices: h' = W_l (A_mean h) + b + W_r h, ReLU between layers."""
    adj = torch.zeros(graph.num_nodes, graph.num_nodes, dtype=x.dtype)
    row, col = graph.edge_index()
    adj[row, col] = 1.0
    a_mean = adj / adj.sum(1, keepdim=True).clamp(min=1)  # isolated nodes aggregate 0
    h = x
    for i, conv in enumerate(model.convs):
        h = conv.lin_l(a_mean @ h) + conv.lin_r(h)
        if i < model.num_layers - 1:
            h = F.relu(h)
    return h


def _gat_full_graph(model: GAT, x, graph):
    """GAT on the whole graph with PyG's convs used as plain (non-bipartite) layers."""
    edge_index = _message_edges(graph)
    h = x
    for i, conv in enumerate(model.convs):
        h = conv(h, edge_index)
        if i < model.num_layers - 1:
            h = F.elu(model.norms[i](h))
    return h


def _randomize_norm_stats(model: torch.nn.Module) -> None:
    """Non-trivial batch-norm running statistics and affine parameters, so eval mode matters."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=m.weight.dtype) + .5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + .5)


def _models():
    torch.manual_seed(0)
    yield "sage", GraphSAGE(6, 8, 3, num_layers=2), _sage_dense
    for norm in ("batch", "layer", "none"):
        for residual in (True, False):
            yield (f"gat-{norm}-res{int(residual)}",
                   GAT(6, 4, 3, num_layers=3, heads=2, norm=norm, residual=residual),
                   _gat_full_graph)


MODELS = list(_models())


@pytest.mark.parametrize("name,model,oracle", MODELS, ids=[m[0] for m in MODELS])
def test_blocks_with_all_neighbours_equal_full_graph(name, model, oracle):
    graph = tiny_graph()
    model = model.double().eval()
    _randomize_norm_stats(model)
    x = torch.randn(graph.num_nodes, 6, dtype=torch.float64)
    n_id, blocks = full_blocks(graph, SEEDS, model.num_layers)
    out = model(x[n_id], blocks)
    assert out.shape == (len(SEEDS), 3)
    torch.testing.assert_close(out, oracle(model, x, graph)[SEEDS])


@pytest.mark.parametrize("name,model,oracle", MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("batch_size", [3, 100])
def test_inference_equals_full_graph(name, model, oracle, batch_size):
    graph = tiny_graph(directed=True)  # direction matters: v aggregates from its CSR row
    model = model.double().train()
    _randomize_norm_stats(model)
    x = torch.randn(graph.num_nodes, 6, dtype=torch.float64)
    out = model.inference(x, graph, batch_size=batch_size)
    assert model.training  # the mode is restored
    model.eval()
    torch.testing.assert_close(out, oracle(model, x, graph))


@pytest.mark.parametrize("name,model,oracle", MODELS[:2], ids=[m[0] for m in MODELS[:2]])
def test_sampler_blocks_with_all_neighbours_equal_full_graph(name, model, oracle):
    # The sampler's blocks (fanout -1) feed the model with the same message direction.
    graph = tiny_graph(directed=True)
    model = model.double().eval()
    x = torch.randn(graph.num_nodes, 6, dtype=torch.float64)
    batch = NeighborSampler(graph, [-1] * model.num_layers).sample(torch.tensor(SEEDS))
    torch.testing.assert_close(model(x[batch.n_id], batch.blocks), oracle(model, x, graph)[SEEDS])


def test_full_neighbour_block_lists_every_neighbour():
    graph = tiny_graph(directed=True)
    n_id, edge_index = full_neighbour_block(graph, 2, 6)
    assert n_id[:4].tolist() == [2, 3, 4, 5]  # destinations first
    assert len(set(n_id.tolist())) == n_id.numel()
    got = sorted(zip(n_id[edge_index[1]].tolist(), n_id[edge_index[0]].tolist()))
    row, col = graph.edge_index()
    want = sorted((v, u) for v, u in zip(row.tolist(), col.tolist()) if 2 <= v < 6)
    assert got == want


@pytest.mark.parametrize("model", [GraphSAGE(6, 8, 3, num_layers=2, dropout=0.5),
                                   GAT(6, 4, 3, num_layers=2, heads=3, attn_dropout=0.2)],
                         ids=["sage", "gat"])
def test_training_forward_shapes_and_gradients(model):
    graph = tiny_graph()
    n_id, blocks = full_blocks(graph, SEEDS, 2)
    x = torch.randn(n_id.numel(), 6, requires_grad=True)
    out = model.train()(x, blocks)
    assert out.shape == (len(SEEDS), 3)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()
               if p.dim() > 1)
    assert x.grad.abs().sum() > 0


def test_gat_widths_and_heads():
    model = GAT(5, 7, 2, num_layers=3, heads=4)
    assert model.convs[0].out_channels == 7 and model.convs[0].concat
    assert model.convs[1].in_channels == 28
    assert model.convs[2].out_channels == 2 and not model.convs[2].concat
    assert [type(n).__name__ for n in model.norms] == ["BatchNorm1d", "BatchNorm1d"]


def test_repr():
    assert repr(GAT(100, 256, 47, num_layers=3, heads=4)) == "GAT(100, 256, 47, num_layers=3, heads=4)"
    assert repr(GraphSAGE(100, 256, 47)) == "GraphSAGE(100, 256, 47, num_layers=3)"


@pytest.mark.parametrize("model", [GraphSAGE(6, 8, 3), GAT(6, 4, 3, norm="batch")],
                         ids=["sage", "gat"])
def test_reset_parameters(model):
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.fill_(7)
    model.reset_parameters()
    for key, tensor in model.state_dict().items():
        assert not (tensor == 7).all(), f"{key} was not reset"


def test_forward_errors():
    model = GraphSAGE(6, 8, 3, num_layers=2)
    n_id, blocks = full_blocks(tiny_graph(), SEEDS, 2)
    x = torch.randn(n_id.numel(), 6)
    with pytest.raises(ValueError, match=r"num_layers=2 but got 3 blocks"):
        model(x, full_blocks(tiny_graph(), SEEDS, 3)[1])
    with pytest.raises(ValueError, match=r"expects x of shape \[\d+, 6\]"):
        model(x[:-1], blocks)
    with pytest.raises(ValueError, match=r"expects x of shape"):
        model(torch.randn(n_id.numel(), 5), blocks)
    other = full_blocks(tiny_graph(), [1, 2], 2)[1]
    with pytest.raises(ValueError, match=r"blocks\[1\].num_src=\d+ differs from blocks\[0\]"):
        model(x, [blocks[0], other[1]])
    with pytest.raises(ValueError, match=r"positive integer batch_size, got 0"):
        model.inference(torch.randn(10, 6), tiny_graph(), batch_size=0)
    with pytest.raises(ValueError, match=r"expects x_all of shape \[10, 6\]"):
        model.inference(torch.randn(9, 6), tiny_graph(), batch_size=4)


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"'GAT' does not support norm='group' \(valid: batch, layer, none\)"):
        GAT(6, 4, 3, norm="group")
    with pytest.raises(ValueError, match=r"'GAT' needs a positive integer heads, got 0"):
        GAT(6, 4, 3, heads=0)
    with pytest.raises(ValueError, match=r"'GAT' needs attn_dropout in \[0, 1\), got 1.0"):
        GAT(6, 4, 3, attn_dropout=1.0)
    with pytest.raises(ValueError, match=r"'GraphSAGE' needs a positive integer num_layers, got 0"):
        GraphSAGE(6, 8, 3, num_layers=0)
    with pytest.raises(ValueError, match=r"'GraphSAGE' needs dropout in \[0, 1\), got -0.1"):
        GraphSAGE(6, 8, 3, dropout=-0.1)
