"""Partition-aware row assignment: which TT embedding row each node gets."""
from partition.assign import (AUTO_MULTILEVEL_EDGES, HIERARCHY_METHODS, METHODS,
                              PARTITIONING_METHODS, RowAssignment, assign_rows, resolve_method)

__all__ = ["AUTO_MULTILEVEL_EDGES", "HIERARCHY_METHODS", "METHODS", "PARTITIONING_METHODS",
           "RowAssignment", "assign_rows", "resolve_method"]
