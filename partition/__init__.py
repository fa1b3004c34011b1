"""Partition-aware row assignment: which TT embedding row each node gets."""
from partition.assign import METHODS, RowAssignment, assign_rows

__all__ = ["METHODS", "RowAssignment", "assign_rows"]
