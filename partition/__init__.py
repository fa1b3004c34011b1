"""Partition-aware row assignment: which TT embedding row each node gets."""
from partition.assign import METHODS, PARTITIONING_METHODS, RowAssignment, assign_rows

__all__ = ["METHODS", "PARTITIONING_METHODS", "RowAssignment", "assign_rows"]
