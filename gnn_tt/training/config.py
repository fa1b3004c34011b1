"""The one configuration of ``gnn-tt train``: a dataclass, its YAML form and its generated CLI.

Precedence (lowest to highest): the dataclass defaults, a YAML file (``--config FILE``), the
flags the user actually passed on the command line.

Example::

    from gnn_tt.training.config import TrainConfig
    from gnn_tt.training.train import run

    summary = run(TrainConfig(dataset="npz:../shared/data/cora.npz", model="sage", epochs=5))
    print(summary.test_acc.mean)
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from gnn_tt.common.checks import check_positive_int
from gnn_tt.embedding.node_input import KINDS as EMBEDDING_KINDS, kind_parts
from gnn_tt.embedding.placement import DEVICE_MEMORY_SHARE, PLACEMENTS as EMB_PLACEMENTS
from gnn_tt.embedding.tt_embedding import INITS as TT_INITS
from partition import METHODS as PARTITION_METHODS

MODELS = ("gat", "sage")
GAT_NORMS = ("batch", "layer", "none")

# The embedded default graph: products-like (power-law community graph, labels follow the
# communities; 16 classes of Zipf sizes, the majority class ~0.3), generated in memory and
# small enough that `gnn-tt train` with no dataset ends within minutes on 2 CPU cores.
DEFAULT_DATASET = "synthetic:nodes=10000,degree=12,classes=16,seed=0"

# What a field changes, its metadata "kind":
# - "training": what is trained (every field not marked otherwise);
# - "runtime": how the job runs and what it reports (another device, more runs, other
#   evaluation batches), not the model a checkpoint holds: a checkpoint resumes under other
#   values, but the results may differ;
# - "location": nothing in the results: where the job reads and writes, how many CPU threads
#   it uses.
_FIELD_KINDS = ("training", "runtime", "location")


def _help(text: str, kind: str = "training") -> dict[str, str]:
    """Field metadata: the CLI help text and the field's kind (see ``_FIELD_KINDS``)."""
    assert kind in _FIELD_KINDS, kind
    return {"help": text, "kind": kind}


@dataclass
class TrainConfig:
    r"""Everything one ``gnn-tt train`` job needs; saved in ``config.json`` and in checkpoints.

    Args:
        dataset (str): ``ogbn-products``, ``ogbn-arxiv``, ``ogbn-papers100M``, ``npz:PATH``,
            ``synthetic-products`` or ``synthetic:nodes=N,degree=D,classes=C,seed=S``.
            (default: a 10k-node products-like synthetic graph)
        root (str, optional): directory of downloaded datasets (default: env ``GNN_TT_DATA``
            or ``./data``, resolved by the data loader).
        model (str): GNN, one of ``gat``, ``sage``. (default: ``"gat"``)
        emb (str): input layer: ``tt`` (TT-compressed learnable node embeddings), ``full``
            (host-resident full learnable table, the baseline), ``features`` (the dataset's
            node features), ``tt+features`` or ``full+features`` (the learnable table
            concatenated with the dataset's node features). The ``features`` kinds need a
            dataset with node features (ogbn-*, npz files with ``x``). (default: ``"tt"``)
        emb_placement (str): where the full table of ``full`` / ``full+features`` lives
            (ignored by the other kinds), one of
            :data:`gnn_tt.embedding.placement.PLACEMENTS`: ``host`` (a replica per process in
            host memory), ``device`` (a replica per process on its device), ``sharded`` (rows
            split over the processes, each shard on its device; in one process it becomes
            ``device``), ``auto`` (see :func:`~gnn_tt.embedding.placement.choose_placement`:
            ``device`` if the table and its ``SparseAdam`` state fit in half the free device
            memory, else ``sharded`` if several processes' shards fit, else ``host``; ``host``
            on the CPU). A runtime field: every placement trains the same model, so a
            checkpoint of ``host`` resumes as ``device`` and back; a ``sharded`` checkpoint
            (one file per rank) resumes only as ``sharded`` under as many processes.
            (default: ``"auto"``)
        emb_dim (int): width D of the learnable table; for ``tt`` it must equal
            ``prod(tt_q_shapes)``. A ``+features`` input is ``D + F`` wide (``F``: the
            features' width, or ``feature_proj``). (default: ``32``)
        feature_proj (int, optional): ``tt+features`` / ``full+features`` only: width of a
            learned linear projection of the node features before the concatenation,
            trained with the GNN's optimizer (``lr``, ``weight_decay``); ``None`` feeds the
            raw features. (default: ``None``)
        tt_rank (int): inner TT rank R of every core. (default: ``16``)
        tt_p_shapes (tuple of int, optional): row factors, product >= number of nodes
            (default: chosen from the graph size by
            :data:`gnn_tt.embedding.tt_shapes.PARTITION_ROWS`).
        tt_q_shapes (tuple of int, optional): column factors, product == ``emb_dim``
            (default: balanced factors of ``emb_dim``).
        tt_init (str): TT core initialization, ``gaussian`` (i.i.d. normal cores) or
            ``ortho`` (semi-orthogonal cores, for every shape); both give the table's entries
            mean square ``1 / emb_dim``, see :class:`~gnn_tt.embedding.TTEmbedding`.
            (default: ``"gaussian"``)
        partition (str): node -> row layout, one of :data:`partition.METHODS`.
            (default: ``"hierarchical"``)
        num_parts (int, optional): k of ``metis-flat`` (0 = original order); required by it.
        num_layers (int): GNN layers. (default: ``3``)
        hidden (int): hidden width (per head for GAT). (default: ``32``)
        heads (int): GAT attention heads. (default: ``4``)
        dropout (float): feature dropout in [0, 1). (default: ``0.5``)
        norm (str): GAT normalization between layers, ``batch``, ``layer`` or ``none``.
            (default: ``"batch"``)
        residual (bool): GAT residual linear connections. (default: ``True``)
        fanouts (tuple of int, optional): neighbours sampled per hop, ``fanouts[0]`` next to
            the seeds, -1 = all; length ``num_layers`` (default: ``(10,) * num_layers``).
        eval_fanouts (tuple of int, optional): fanouts of sampled evaluation (default: the
            training fanouts; -1 everywhere gives exact full-neighbour evaluation).
        batch_size (int): seeds per training batch on each rank. (default: ``128``)
        eval_batch_size (int, optional): seeds per evaluation batch (default: ``2 * batch_size``).
        epochs (int): training epochs per run. (default: ``15``)
        runs (int): independent runs with seeds ``seed .. seed + runs - 1``. (default: ``1``)
        seed (int): seed of the first run; rank r uses ``seed + r`` for its own randomness.
            (default: ``0``)
        lr (float): Adam learning rate of the GNN. (default: ``0.003``)
        emb_lr (float, optional): learning rate of the embedding (TT cores or the full table)
            (default: ``lr``).
        weight_decay (float): Adam weight decay of the GNN. (default: ``0.0``)
        device (str): ``auto`` (``cuda:LOCAL_RANK`` if available, else ``cpu``), ``cpu``,
            ``cuda`` or ``cuda:N``. (default: ``"auto"``)
        amp (bool): bf16 autocast on GPU (ignored on CPU). (default: ``True``)
        num_threads (int): torch CPU threads, 0 = torch's default. (default: ``0``)
        output (str, optional): output directory (default: ``runs/<dataset>-<model>-<emb>-<hash>``,
            the same for the same training config, so a restarted command finds its checkpoint).
        resume (bool): continue from ``output/checkpoint.pt`` when it exists; restarts under
            ``torchrun --max-restarts`` resume automatically. (default: ``False``)
        overwrite (bool): replace what ``output`` holds (its checkpoint, metrics and summary
            are removed before training); without it or ``resume``, a non-empty ``output`` is
            refused. (default: ``False``)
        cache_dir (str, optional): partition cache (default: ``cache/partitions``).
        eval_every (int): evaluate every this many epochs (and after the last). (default: ``1``)
        layerwise_inference (bool): final evaluation of the best model with layer-wise
            full-neighbour inference over all nodes (exact, needs [N, D] in memory).
            (default: ``False``)
    """

    dataset: str = field(default=DEFAULT_DATASET, metadata=_help(
        "ogbn-products | ogbn-arxiv | ogbn-papers100M | npz:PATH | synthetic-products | "
        "synthetic:nodes=N,degree=D,classes=C,seed=S"))
    root: str | None = field(default=None, metadata=_help(
        "dataset directory (None: env GNN_TT_DATA or ./data)", "location"))
    model: str = field(default="gat", metadata=_help(f"GNN: {' | '.join(MODELS)}"))
    emb: str = field(default="tt", metadata=_help(
        f"input layer: {' | '.join(EMBEDDING_KINDS)} (+features: the learnable table "
        f"concatenated with the dataset's node features)"))
    emb_placement: str = field(default="auto", metadata=_help(
        f"where a full table (--emb full, full+features; ignored by the other kinds) lives: "
        f"{' | '.join(EMB_PLACEMENTS)}; auto: device if the table and its SparseAdam state fit "
        f"in a share {DEVICE_MEMORY_SHARE:g} of the free device memory, else sharded if several "
        f"processes' shards fit, else host (host on the CPU); sharded in one process is device",
        "runtime"))
    emb_dim: int = field(default=32, metadata=_help(
        "width D of the learnable table (= prod(tt_q_shapes))"))
    feature_proj: int | None = field(default=None, metadata=_help(
        "+features kinds: width of a learned linear projection of the node features before "
        "the concatenation (None: the raw features)"))
    tt_rank: int = field(default=16, metadata=_help("inner TT rank of every core"))
    tt_p_shapes: tuple[int, ...] | None = field(default=None, metadata=_help(
        "row factors, comma separated, product >= nodes (None: from the graph size)"))
    tt_q_shapes: tuple[int, ...] | None = field(default=None, metadata=_help(
        "column factors, comma separated, product == emb_dim (None: balanced)"))
    tt_init: str = field(default="gaussian", metadata=_help(
        f"TT init: {' | '.join(TT_INITS)} (ortho: semi-orthogonal cores, any shape)"))
    partition: str = field(default="hierarchical", metadata=_help(
        f"row layout: {' | '.join(PARTITION_METHODS)}"))
    num_parts: int | None = field(default=None, metadata=_help(
        "k of metis-flat (0 = original order)"))
    num_layers: int = field(default=3, metadata=_help("GNN layers"))
    hidden: int = field(default=32, metadata=_help("hidden width (per head for GAT)"))
    heads: int = field(default=4, metadata=_help("GAT attention heads"))
    dropout: float = field(default=0.5, metadata=_help("feature dropout in [0, 1)"))
    norm: str = field(default="batch", metadata=_help(f"GAT norm: {' | '.join(GAT_NORMS)}"))
    residual: bool = field(default=True, metadata=_help("GAT residual connections"))
    fanouts: tuple[int, ...] | None = field(default=None, metadata=_help(
        "neighbours per hop, comma separated, first = next to the seeds, -1 = all "
        "(None: 10 per layer)"))
    eval_fanouts: tuple[int, ...] | None = field(default=None, metadata=_help(
        "fanouts of evaluation (None: the training fanouts; --eval-fanouts=-1,-1,-1 = exact)"))
    batch_size: int = field(default=128, metadata=_help("seeds per training batch per rank"))
    eval_batch_size: int | None = field(default=None, metadata=_help(
        "seeds per evaluation batch (None: 2 * batch_size)", "runtime"))
    epochs: int = field(default=15, metadata=_help("epochs per run"))
    runs: int = field(default=1, metadata=_help("runs with seeds seed..seed+runs-1",
                                                "runtime"))
    seed: int = field(default=0, metadata=_help("seed of the first run (rank r adds r)"))
    lr: float = field(default=0.003, metadata=_help("Adam learning rate of the GNN"))
    emb_lr: float | None = field(default=None, metadata=_help(
        "learning rate of the embedding (None: lr)"))
    weight_decay: float = field(default=0.0, metadata=_help("Adam weight decay of the GNN"))
    device: str = field(default="auto", metadata=_help("auto | cpu | cuda | cuda:N",
                                                       "runtime"))
    amp: bool = field(default=True, metadata=_help("bf16 autocast on GPU"))
    num_threads: int = field(default=0, metadata=_help("torch CPU threads (0: default)",
                                                       "location"))
    output: str | None = field(default=None, metadata=_help(
        "output directory (None: runs/<dataset>-<model>-<emb>-<config hash>)", "location"))
    resume: bool = field(default=False, metadata=_help(
        "continue from OUTPUT/checkpoint.pt if it exists", "location"))
    overwrite: bool = field(default=False, metadata=_help(
        "replace the run in a non-empty OUTPUT (refused without this or --resume)",
        "location"))
    cache_dir: str | None = field(default=None, metadata=_help(
        "partition cache directory (None: cache/partitions)", "location"))
    eval_every: int = field(default=1, metadata=_help("evaluate every N epochs"))
    layerwise_inference: bool = field(default=False, metadata=_help(
        "final evaluation by layer-wise full-neighbour inference"))

    def __post_init__(self) -> None:
        _choice("model", self.model, MODELS)
        _choice("emb", self.emb, EMBEDDING_KINDS)
        _choice("emb_placement", self.emb_placement, EMB_PLACEMENTS)
        if self.feature_proj is not None:
            check_positive_int("feature_proj", self.feature_proj)
            if len(kind_parts(self.emb)) == 1:
                concat = [k for k in EMBEDDING_KINDS if len(kind_parts(k)) > 1]
                raise ValueError(f"feature_proj={self.feature_proj} projects the node features "
                                 f"beside a learnable table: it needs emb in "
                                 f"{', '.join(concat)}, got emb={self.emb!r}")
        _choice("partition", self.partition, PARTITION_METHODS)
        _choice("tt_init", self.tt_init, TT_INITS)
        _choice("norm", self.norm, GAT_NORMS)
        for name in ("emb_dim", "tt_rank", "num_layers", "hidden", "heads", "batch_size",
                     "epochs", "runs", "eval_every"):
            check_positive_int(name, getattr(self, name))
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("lr", "emb_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: --resume continues "
                             "the run in the output directory, --overwrite replaces it")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not (self.device in ("auto", "cpu", "cuda")
                or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.partition == "metis-flat" and self.num_parts is None:
            raise ValueError("partition 'metis-flat' needs num_parts (0 = original order)")
        if self.num_parts is not None and self.num_parts < 0:
            raise ValueError(f"num_parts must be >= 0, got {self.num_parts}")

        # Derived defaults.
        if self.fanouts is None:
            self.fanouts = (10,) * self.num_layers
        self.fanouts = _fanouts("fanouts", self.fanouts, self.num_layers)
        self.eval_fanouts = _fanouts("eval_fanouts", self.eval_fanouts or self.fanouts,
                                     self.num_layers)
        if self.eval_batch_size is None:
            self.eval_batch_size = 2 * self.batch_size
        check_positive_int("eval_batch_size", self.eval_batch_size)
        if self.emb_lr is None:
            self.emb_lr = self.lr
        for name in ("tt_p_shapes", "tt_q_shapes"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(int(v) for v in value)
                if len(value) < 2 or min(value) < 1:
                    raise ValueError(f"{name} needs >= 2 factors, each >= 1, got {value}")
                setattr(self, name, value)
        if self.tt_q_shapes is not None and _prod(self.tt_q_shapes) != self.emb_dim:
            raise ValueError(f"tt_q_shapes {self.tt_q_shapes} multiply to "
                             f"{_prod(self.tt_q_shapes)}, not emb_dim={self.emb_dim}")
        if (self.tt_p_shapes is not None and self.tt_q_shapes is not None
                and len(self.tt_p_shapes) != len(self.tt_q_shapes)):
            raise ValueError(f"tt_p_shapes {self.tt_p_shapes} and tt_q_shapes "
                             f"{self.tt_q_shapes} need the same number of factors")
        if self.cache_dir is None:
            self.cache_dir = os.path.join("cache", "partitions")
        if self.output is None:
            self.output = os.path.join("runs", f"{_slug(self.dataset)}-{self.model}-"
                                               f"{self.emb}-{self.training_hash()}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise a ``ValueError`` listing the valid ones."""
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: "
                             f"{', '.join(field_names())}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def training_dict(self) -> dict[str, Any]:
        """The fields that define what is trained (all but :data:`RUNTIME_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def training_hash(self) -> str:
        """8 hex chars of SHA-256 over :meth:`training_dict` (after derivation, so a value
        given explicitly and the same value derived by default hash alike)."""
        text = json.dumps(self.training_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def differing_fields(self, other: "TrainConfig") -> list[str]:
        """Names of the training fields whose values differ between ``self`` and ``other``."""
        a, b = self.training_dict(), other.training_dict()
        return sorted(k for k in a if a[k] != b.get(k))


# Fields that do not change what is trained: a checkpoint written under other values of these
# can be resumed.
RUNTIME_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig)
                           if f.metadata["kind"] != "training")
# Fields that change no result either: a finished run stands for every value of these.
LOCATION_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig)
                            if f.metadata["kind"] == "location")


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--config FILE`` and one ``--kebab-name`` flag per :class:`TrainConfig` field.

    Flag defaults are ``argparse.SUPPRESS`` so :func:`config_from_args` sees only the flags the
    user passed (they override the YAML file); the help text shows the dataclass default.
    Tuples take comma-separated ints (``--fanouts 15,10,5``); booleans take
    ``--flag/--no-flag``; optional fields accept ``none``.
    """
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML file of config values (overridden by flags)")
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig.__dataclass_fields__
    for f in dataclasses.fields(TrainConfig):
        default = defaults[f.name].default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        kind = _base_type(hints[f.name])
        kwargs: dict[str, Any] = dict(default=argparse.SUPPRESS, dest=f.name,
                                      help=f"{f.metadata['help']} (default: {shown})")
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            parser.add_argument(flag, type=_parser_for(f.name, hints[f.name]),
                                metavar=f.name.upper(), **kwargs)
    return parser


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file: a mapping of :class:`TrainConfig` field names (``-`` or ``_``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping, got "
                         f"{type(values).__name__}")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - set(field_names()))
    if unknown:
        raise ValueError(f"config file {str(path)!r}: unknown keys {unknown}; valid keys: "
                         f"{', '.join(field_names())}")
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- YAML (``args.config``) <- the flags present in ``args``."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_yaml(args.config))
    values.update({k: v for k, v in vars(args).items() if k in set(field_names())})
    return TrainConfig.from_dict(values)


def parse_config(argv: Sequence[str] | None = None, prog: str = "gnn-tt train") -> TrainConfig:
    """Build a :class:`TrainConfig` from command-line arguments (``None``: ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Train GAT/GraphSAGE with TT-compressed (or full-table) node "
        "embeddings; runs alone or under torchrun.")
    add_config_args(parser)
    return config_from_args(parser.parse_args(argv))


# --- helpers ---------------------------------------------------------------------------------

def _choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid values: {', '.join(valid)}")


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _fanouts(name: str, value: Sequence[int], num_layers: int) -> tuple[int, ...]:
    value = tuple(int(v) for v in value)
    if len(value) != num_layers:
        raise ValueError(f"{name} {value} has {len(value)} entries but num_layers={num_layers}; "
                         f"give one fanout per layer")
    if any(v < 1 and v != -1 for v in value):
        raise ValueError(f"{name} {value}: each fanout must be >= 1 or -1 (all neighbours)")
    return value


def _slug(dataset: str) -> str:
    """Filesystem-safe short name of a dataset spec (``npz:/a/cora.npz`` -> ``cora``)."""
    name = Path(dataset[4:]).stem if dataset.startswith("npz:") else dataset.split(":")[0]
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _base_type(hint: Any) -> Any:
    """``int | None`` -> ``int``; ``tuple[int, ...] | None`` -> ``tuple[int, ...]``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def _parser_for(name: str, hint: Any):
    """A string -> value converter for argparse, with an error naming the flag."""
    optional = _base_type(hint) is not hint
    base = _base_type(hint)

    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        try:
            if typing.get_origin(base) is tuple:
                return tuple(int(v) for v in text.split(",") if v.strip())
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--{name.replace('_', '-')}: invalid value {text!r}") from None

    parse.__name__ = getattr(base, "__name__", str(base))
    return parse
