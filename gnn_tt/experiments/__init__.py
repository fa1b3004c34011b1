"""Experiments over many training jobs: partition-granularity sweeps and their reports."""
