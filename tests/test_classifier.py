import gc

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from gnn_tt.sampling.sampler import MiniBatch
from gnn_tt.embedding import build_node_input
from gnn_tt.embedding.node_input import KINDS
from gnn_tt.models import GAT, GraphSAGE, NodeClassifier, wrap_ddp
from oracle_blocks import full_blocks, tiny_graph
from two_process import spawn

P_SHAPES, Q_SHAPES = [2, 3, 2], [3, 2, 1]  # 12 TT rows for the 10 nodes, D = 6
LABELS = torch.arange(10) % 3
RANK_SEEDS = ([0, 4, 7], [2, 4, 9, 5])  # the two ranks' batches (node 4 in both)
# (kind, feature_proj) of the two-process test: a full table beside projected features mixes
# the sparse self-synced table with a dense DDP parameter in front of the GNN.
DDP_MODELS = (("tt", None), ("full", None), ("full+features", 4))


def _batch(seeds):
    n_id, blocks = full_blocks(tiny_graph(), seeds, 2)
    return MiniBatch(n_id, blocks, batch_size=len(seeds))


def _model(kind: str, feature_proj: int | None = None) -> NodeClassifier:
    torch.manual_seed(0)
    node_input = build_node_input(kind, num_nodes=10, embedding_dim=6,
                                  row_of_node=torch.arange(10), tt_ranks=2,
                                  tt_p_shapes=P_SHAPES, tt_q_shapes=Q_SHAPES,
                                  x=torch.randn(10, 6), feature_proj=feature_proj, seed=1)
    return NodeClassifier(node_input, GraphSAGE(node_input.embedding_dim, 8, 3, num_layers=2,
                                                dropout=0.0))


def _step(model: NodeClassifier, loss_fn) -> None:
    """One step with the project's optimizer split: Adam on the GNN, the input's own
    optimizer (Adam on TT cores, SparseAdam on the full table) on the embedding."""
    optimizers = [torch.optim.Adam(model.gnn_parameters(), lr=0.05)]
    emb_opt = model.node_input.embedding_optimizer(0.05)
    optimizers += [emb_opt] if emb_opt is not None else []
    loss_fn().backward()
    model.node_input.sync_gradients()
    for opt in optimizers:
        opt.step()


@pytest.mark.parametrize("kind", KINDS)
def test_forward_is_gnn_of_input(kind):
    model = _model(kind).eval()
    batch = _batch([1, 8])
    want = model.gnn(model.node_input(batch.n_id), batch.blocks)
    assert torch.equal(model(batch), want)
    assert model(batch).shape == (2, 3)


@pytest.mark.parametrize("kind,num_embedding", [("tt", 3), ("full", 1), ("features", 0),
                                                ("tt+features", 3), ("full+features", 1)])
def test_parameter_split(kind, num_embedding):
    model = _model(kind)
    emb, gnn = model.embedding_parameters(), model.gnn_parameters()
    assert len(emb) == num_embedding
    assert {id(p) for p in emb}.isdisjoint(id(p) for p in gnn)
    assert len(emb) + len(gnn) == len(list(model.parameters()))
    assert {id(p) for p in gnn} == {id(p) for p in model.gnn.parameters()}


@pytest.mark.parametrize("learnable", ["tt", "full"])
def test_feature_projection_trains_with_the_gnn(learnable):
    model = _model(f"{learnable}+features", feature_proj=4)
    projection = list(model.node_input.projection.parameters())
    gnn = {id(p) for p in model.gnn_parameters()}
    assert all(id(p) in gnn for p in projection)
    assert gnn == {id(p) for p in [*model.gnn.parameters(), *projection]}
    counts = model.parameter_counts()
    assert counts["feature_projection"] == 6 * 4 + 4
    assert counts["gnn"] == sum(p.numel() for p in model.gnn.parameters())
    assert set(counts) == {"tt_cores" if learnable == "tt" else "full_table",
                           "feature_projection", "gnn"}
    assert set(_model("features").parameter_counts()) == {"gnn"}


@pytest.mark.parametrize("kind,names", [
    ("tt", ["node_input.row_of_node"]),
    ("full", ["node_input.embedding.weight", "node_input._device_anchor"]),
    ("features", ["node_input.x"]),
    ("tt+features", ["node_input.learnable.row_of_node", "node_input.features.x"]),
    ("full+features", ["node_input.learnable.embedding.weight",
                       "node_input.learnable._device_anchor", "node_input.features.x"])])
def test_ddp_ignored_names_exist(kind, names):
    model = _model(kind)
    assert model.ddp_ignored_names() == names
    known = dict(model.named_parameters()) | dict(model.named_buffers())
    assert all(name in known for name in names)


@pytest.mark.parametrize("gnn", [GraphSAGE(6, 8, 3, num_layers=2), GAT(6, 4, 3, num_layers=2)],
                         ids=["sage", "gat"])
def test_inference_matches_blocks_with_all_neighbours(gnn):
    torch.manual_seed(0)
    model = NodeClassifier(build_node_input("full", num_nodes=10, embedding_dim=6), gnn).eval()
    out = model.inference(tiny_graph(), batch_size=4)
    assert out.shape == (10, 3) and out.device.type == "cpu"
    batch = _batch(list(range(10)))
    torch.testing.assert_close(out, model(batch))  # seeds 0..9 in order


def test_errors():
    full = build_node_input("full", num_nodes=10, embedding_dim=6)
    with pytest.raises(ValueError, match=r"embedding_dim \(6\) must equal the GNN's in_channels \(5\)"):
        NodeClassifier(full, GraphSAGE(5, 8, 3))
    model = NodeClassifier(full, GraphSAGE(6, 8, 3))
    with pytest.raises(ValueError, match=r"graph has 10 nodes but the input layer has 11"):
        NodeClassifier(build_node_input("full", num_nodes=11, embedding_dim=6),
                       GraphSAGE(6, 8, 3)).inference(tiny_graph(), 4)
    with pytest.raises(ValueError, match=r"positive integer batch_size, got 0"):
        model.inference(tiny_graph(), 0)


def _loss(model, seeds):
    batch = _batch(seeds)
    return F.cross_entropy(model(batch), LABELS[seeds])


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    result = {}
    for kind, proj in DDP_MODELS:
        model = _model(kind, proj)
        ddp = wrap_ddp(model)
        _step(model, lambda: F.cross_entropy(ddp(_batch(RANK_SEEDS[rank])),
                                             LABELS[RANK_SEEDS[rank]]))
        result[kind] = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.save(result, f"{out_dir}/{rank}.pt")
    # The DDP wrapper goes first, while the group still holds its gloo process group: freed
    # after destroy_process_group, its reducer would run the group's destructor with the GIL
    # held and could deadlock with a gloo thread that needs the GIL.
    ddp = model = None  # noqa: F841
    gc.collect()
    dist.destroy_process_group()


@pytest.mark.slow
def test_wrap_ddp_two_processes_equal_single_process_step(tmp_path):
    spawn(_ddp_worker, (str(tmp_path / "init"), str(tmp_path)))
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    for kind, proj in DDP_MODELS:
        # Replicas identical, and equal to one process stepping on the mean of the ranks'
        # losses (what DDP's and sync_gradients' averaging computes).
        ref = _model(kind, proj)
        initial = {k: v.detach().clone() for k, v in ref.named_parameters()}
        _step(ref, lambda: (_loss(ref, RANK_SEEDS[0]) + _loss(ref, RANK_SEEDS[1])) / 2)
        for name, value in r0[kind].items():
            assert torch.equal(value, r1[kind][name]), (kind, name)
            torch.testing.assert_close(value, dict(ref.named_parameters())[name].detach())
            assert not torch.equal(value, initial[name]), (kind, name)
