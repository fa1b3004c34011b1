r"""The ``parts`` axis of sweeps and reports: how finely a row layout cuts the graph.

A training config's position on the axis is

- ``0`` for the dataset's original order;
- ``k = num_parts`` for ``metis-flat``: one k-way METIS partition, nodes sorted by part, laid
  out in the config's own ``tt_p_shapes``;
- ``p1 = tt_p_shapes[0]`` for ``hierarchical``: the number of top-level parts (the row factors
  the job used, which its summary holds when the config leaves them to the job). A sweep gives
  the other ``d - 1`` row factors the capacity each top-level part needs
  (:meth:`~gnn_tt.embedding.tt_shapes.TTShapePolicy.row_shapes` with ``top_parts=p1``), with
  ``d`` the length of the base config's ``tt_p_shapes`` (the default number of cores when it
  has none);
- none (``None``) for the orders that cut nothing (``random``, ``rcm``).

:func:`parts_of` reads a config's position and :func:`layout_at` sets it, so that
``parts_of`` of a config changed by ``layout_at(method, parts, ...)`` is ``parts``.
"""
from __future__ import annotations

from typing import Any, Sequence

from gnn_tt.embedding.tt_shapes import DEFAULT_NUM_CORES, TTShapePolicy
from gnn_tt.training.config import TrainConfig
from partition import PARTITIONING_METHODS


def parts_of(config: dict[str, Any], tt_p_shapes: Sequence[int] | None = None) -> int | None:
    r"""Position of a training config on the axis, ``None`` when its layout is off the axis
    (see the module docstring).

    Args:
        config (dict): the training config (``TrainConfig.to_dict()``).
        tt_p_shapes (sequence of int, optional): the row factors the job used (its summary's);
            ``hierarchical`` reads ``p1`` from them, else from the config's. A ``hierarchical``
            config with neither (a job that failed before choosing them) is off the axis.
            (default: ``None``)
    """
    partition = config.get("partition")
    if partition == "original":
        return 0
    if partition == "metis-flat":
        return int(config["num_parts"])
    if partition == "hierarchical":
        shapes = tt_p_shapes or config.get("tt_p_shapes")
        return int(shapes[0]) if shapes else None
    return None


def layout_at(method: str, parts: int, base: TrainConfig, num_nodes: int,
              policy: TTShapePolicy) -> dict[str, Any]:
    r"""The config changes that place ``base`` at ``parts`` on the axis of ``method``.

    Args:
        method (str): one of :data:`partition.PARTITIONING_METHODS`.
        parts (int): the position, ``0`` = original order (whatever ``method``).
        base (TrainConfig): the config to change; ``hierarchical`` keeps its number of cores.
        num_nodes (int): nodes of ``base.dataset``; ``hierarchical`` sizes the row factors
            with it.
        policy (TTShapePolicy): chooses the ``hierarchical`` row factors under ``p1``.

    Returns:
        the fields to change, for ``dataclasses.replace(base, **changes)``.
    """
    if method not in PARTITIONING_METHODS:
        raise ValueError(f"layout_at: method must be one of {', '.join(PARTITIONING_METHODS)}, "
                         f"got {method!r}")
    if parts == 0:
        return {"partition": "original", "num_parts": None}
    if method == "metis-flat":
        return {"partition": "metis-flat", "num_parts": parts}
    num_cores = len(base.tt_p_shapes) if base.tt_p_shapes else DEFAULT_NUM_CORES
    return {"partition": "hierarchical", "num_parts": None,
            "tt_p_shapes": policy.row_shapes(num_nodes, num_cores, top_parts=parts)}
